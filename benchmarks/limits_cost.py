"""What the rate limits cost the gateway: its CPU per request, a key unlimited vs limited.

    python -m benchmarks.limits_cost [--requests N] [--rounds R] [--clients C]

A mock worker and the client run in this process; the gateway runs as production runs it, its own
process (`inventiv gateway --workers 1`), against real Postgres and Redis (benchmarks/services.py).
Each round sends N non-streaming chat requests (from C concurrent clients) with the key unlimited, then N with requests,
tokens and concurrency limits set on the key and its organization, far above what the run uses, so
every request pays the Lua check and its share of the batched settlement but none is refused. The
gateway's CPU (utime + stime from /proc, benchmarks/procfs.py) over each round, divided by N, is its
cost per request; Redis's own CPU is not counted. Medians over the rounds are printed. Every answer
is checked to carry x-ratelimit-* headers in the limited rounds and none in the others.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
import uvloop
from aiohttp import web

from benchmarks import procfs
from benchmarks.loadgen import Endpoint
from benchmarks.processes import LOOPBACK, Started, free_port, get_request, start, stop, wait_ready
from benchmarks.services import BenchServices, bench_services, prepare_database
from inventiv import redis_keys
from providers.mock.worker import WorkerConfig
from providers.mock.worker import create_app as create_worker_app
from sql.pool import create_pool

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}
# Far above anything the run reaches: every request is checked and counted, none refused.
_HIGH = 1_000_000_000
_SET_LIMITS = """
UPDATE {table} SET requests_per_minute = %(v)s, tokens_per_minute = %(v)s, concurrent_requests = %(v)s
"""
# The gateway reloads its key table every second; a change is announced too, so this is ample.
_RELOAD_WAIT_S = 5.0
# The gateway on one CPU, as benchmarks/stack.py runs it; the client and the worker share the others.
_GATEWAY_CPU = 1


async def _serve_worker() -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(create_worker_app(WorkerConfig(model=MODEL)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


async def _round(session: aiohttp.ClientSession, url: str, key: str, n: int, limited: bool, clients: int = 1) -> None:
    """n requests from `clients` concurrent senders, each answer checked to be limited or not as asked."""
    await asyncio.gather(*(_send(session, url, key, n // clients + (i < n % clients), limited) for i in range(clients)))


async def _send(session: aiohttp.ClientSession, url: str, key: str, n: int, limited: bool) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(n):
        async with session.post(url, json=BODY, headers=headers) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"request failed: {resp.status}")
            if ("x-ratelimit-limit-requests" in resp.headers) != limited:
                raise RuntimeError(f"the key's limits are not {'on' if limited else 'off'} as this round needs")


async def _set_limits(services: BenchServices, value: int | None) -> None:
    pool = await create_pool(services.database_url, maxsize=1)
    try:
        async with pool.acquire() as conn, conn.cursor() as cur:
            for table in ("api_keys", "organizations"):
                await cur.execute(_SET_LIMITS.format(table=table), {"v": value})
    finally:
        pool.close()
        await pool.wait_closed()
    client = aioredis.Redis.from_url(services.redis_url)
    try:
        await client.publish(services.redis_prefix + redis_keys.KEYS_CHANGED, "benchmark")
    finally:
        await client.aclose()


async def _until_applied(session: aiohttp.ClientSession, url: str, key: str, limited: bool) -> None:
    deadline = time.monotonic() + _RELOAD_WAIT_S
    while True:
        try:
            await _round(session, url, key, 1, limited)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _start_gateway(services: BenchServices, data_dir: Path) -> tuple[Started, Endpoint]:
    endpoint = Endpoint(LOOPBACK, free_port())
    env = {
        **os.environ, **services.gateway_env(), "INVENTIV_LOG_LEVEL": "WARNING", "INVENTIV_ACCESS_LOG": "false",
        "INVENTIV_DATA_DIR": str(data_dir / "gateway-data"), "INVENTIV_WORKER_SECRET_KEY": secrets.token_urlsafe(48),
    }  # fmt: skip
    argv = [sys.executable, "-m", "inventiv", "gateway", "--workers", "1", "--port", str(endpoint.port)]
    gateway = await start("gateway", argv, cpu=_GATEWAY_CPU, log_dir=data_dir, env=env, cwd=data_dir)
    await wait_ready(gateway, endpoint, get_request(endpoint, "/readyz"))
    return gateway, endpoint


async def _run(requests: int, rounds: int, clients: int, data_dir: Path) -> dict[str, float]:
    worker, worker_port = await _serve_worker()
    try:
        async with bench_services(data_dir) as services:
            key, _ = await prepare_database(services.database_url, {MODEL: (LOOPBACK, worker_port)})
            gateway, endpoint = await _start_gateway(services, data_dir)
            try:
                url = f"http://{endpoint.host}:{endpoint.port}/v1/chat/completions"
                return await _measure(services, gateway, url, key, requests, rounds, clients)
            finally:
                await stop(gateway)
    finally:
        await worker.cleanup()


async def _measure(services: BenchServices, gateway: Started, url: str, key: str, n: int,
                   rounds: int, clients: int) -> dict[str, float]:  # fmt: skip
    samples: dict[str, list[float]] = {"off": [], "on": []}
    async with aiohttp.ClientSession() as session:
        await _round(session, url, key, min(n, 200), limited=False)  # warm up connections and caches
        for _ in range(rounds):
            for variant, value in (("off", None), ("on", _HIGH)):
                await _set_limits(services, value)
                await _until_applied(session, url, key, limited=value is not None)
                before = procfs.tree_cpu_seconds(gateway.process.pid)
                await _round(session, url, key, n, limited=value is not None, clients=clients)
                samples[variant].append((procfs.tree_cpu_seconds(gateway.process.pid) - before) / n * 1e6)
    return {variant: statistics.median(values) for variant, values in samples.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.limits_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    # Several requests in flight, as a gateway under load has them; 1: strictly one after another.
    parser.add_argument("--clients", type=int, default=16, help="concurrent senders")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="limits-cost-") as tmp:
        result = uvloop.run(_run(args.requests, args.rounds, args.clients, Path(tmp)))
    print(f"requests per variant and round: {args.requests} from {args.clients} clients, rounds: {args.rounds} "
          "(medians)")
    print(f"limits off: {result['off']:8.1f} µs gateway CPU/request")
    print(f"limits on:  {result['on']:8.1f} µs gateway CPU/request")
    print(f"cost:       {result['on'] - result['off']:8.1f} µs gateway CPU/request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
