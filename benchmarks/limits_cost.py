"""What the rate limits cost the gateway: CPU and wall time per request, a key unlimited vs limited.

    python -m benchmarks.limits_cost [--requests N] [--rounds R]

One process holds a mock worker, the gateway app and the client, against real Postgres and Redis
(benchmarks/services.py). Each round sends N sequential non-streaming chat requests with the key
unlimited, then N with requests, tokens and concurrency limits set on the key and its organization, far
above what the run uses, so every request pays the Lua check and the background settlement but none is
refused. `time.process_time()` counts this process's CPU: worker and client are the same in both
variants, so the difference is the limits' cost in the gateway. Redis's own CPU is not counted. The
medians over the rounds are printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import uvloop
from aiohttp import web

from benchmarks.services import bench_services, prepare_database
from gateway import state
from gateway.app import create_app
from inventiv.settings import Settings
from providers.mock.worker import WorkerConfig
from providers.mock.worker import create_app as create_worker_app

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}
# Far above anything the run reaches: every request is checked and counted, none refused.
_HIGH = 1_000_000_000
_SET_LIMITS = """
UPDATE {table} SET requests_per_minute = %(v)s, tokens_per_minute = %(v)s, concurrent_requests = %(v)s
"""


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, int(port)


async def _round(session: aiohttp.ClientSession, url: str, key: str, n: int, limited: bool) -> tuple[float, float]:
    """CPU and wall microseconds per request over n requests, each checked to be limited or not as asked."""
    headers = {"Authorization": f"Bearer {key}"}
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        async with session.post(url, json=BODY, headers=headers) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"request failed: {resp.status}")
            if ("x-ratelimit-limit-requests" in resp.headers) != limited:
                raise RuntimeError(f"the key's limits are not {'on' if limited else 'off'} as this round needs")
    return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


async def _set_limits(app: web.Application, value: int | None) -> None:
    async with app[state.DB].acquire() as conn, conn.cursor() as cur:
        for table in ("api_keys", "organizations"):
            await cur.execute(_SET_LIMITS.format(table=table), {"v": value})
    await app[state.PLANE].reload(app[state.DB])


async def _run(requests: int, rounds: int, data_dir: Path) -> dict[str, tuple[float, float]]:
    worker_runner, worker_port = await _serve(create_worker_app(WorkerConfig(model=MODEL)))
    try:
        async with bench_services(data_dir) as services:
            key, _ = await prepare_database(services.database_url, {MODEL: ("127.0.0.1", worker_port)})
            settings = Settings(
                database_url=services.database_url, redis_url=services.redis_url,
                redis_prefix=services.redis_prefix, data_dir=str(data_dir), access_log=False,
                worker_secret_key="limits-cost-benchmark-key-0123456789",
            )  # fmt: skip
            app = create_app(settings)
            runner, port = await _serve(app)
            try:
                return await _measure(app, f"http://127.0.0.1:{port}/v1/chat/completions", key, requests, rounds)
            finally:
                await runner.cleanup()
    finally:
        await worker_runner.cleanup()


async def _measure(app: web.Application, url: str, key: str, n: int, rounds: int) -> dict[str, tuple[float, float]]:
    samples: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    async with aiohttp.ClientSession() as session:
        await _round(session, url, key, min(n, 200), limited=False)  # warm up connections and caches
        for _ in range(rounds):
            for variant, value in (("off", None), ("on", _HIGH)):
                await _set_limits(app, value)
                samples[variant].append(await _round(session, url, key, n, limited=value is not None))
    return {v: (statistics.median(c for c, _ in s), statistics.median(w for _, w in s)) for v, s in samples.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.limits_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="limits-cost-") as tmp:
        result = uvloop.run(_run(args.requests, args.rounds, Path(tmp)))
    (off_cpu, off_wall), (on_cpu, on_wall) = result["off"], result["on"]
    print(f"requests per variant and round: {args.requests}, rounds: {args.rounds} (medians)")
    print(f"limits off: {off_cpu:8.1f} µs CPU/request  {off_wall:8.1f} µs wall/request")
    print(f"limits on:  {on_cpu:8.1f} µs CPU/request  {on_wall:8.1f} µs wall/request")
    print(f"cost:       {on_cpu - off_cpu:8.1f} µs CPU/request  {on_wall - off_wall:8.1f} µs wall/request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
