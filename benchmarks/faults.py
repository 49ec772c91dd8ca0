"""Faults with figures: usage records through a Postgres outage, a Redis outage and a gateway SIGKILL.

    python -m benchmarks.faults [--quick] [--rate N] [--json PATH]

Each scenario runs real processes: a private Postgres and a private redis-server (benchmarks/outages.py,
never the machine's own), a mock worker and one gateway process (`inventiv gateway`), with an
open-loop load of chat requests, one in four streamed, one in four carrying a session. Every request
has an X-Request-Id of its own, so what the driver saw completed is compared one by one with
`finops.inference_usage` (`correlation_id`):

- lost: completed requests without their final usage row; doubled: a request with two rows, or
  `instance_request_metrics` counting more requests than there are final rows;
- Postgres stopped (`pg_ctl stop -m immediate`) and Redis stopped (SIGTERM, its append-only file on)
  for a while under load: 5xx answers, requests served meanwhile, seconds from the service's return
  until every request completed before it is in Postgres, the gateway's RSS;
- the gateway SIGKILLed under load, buffered and durable usage (INVENTIV_USAGE_DURABILITY): completed
  requests left without a record, and streams cut by the kill that left a row;
- the cost of durable mode: gateway CPU and client latency per request, buffered and durable, in one run.

The tests in tests/faults/ run the same scenarios with outages of a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from benchmarks import procfs
from benchmarks.loadgen import Endpoint
from benchmarks.outages import PrivatePostgres, PrivateRedis
from benchmarks.processes import LOOPBACK, Started, free_port, get_request, start, stop, wait_ready
from benchmarks.services import prepare_database
from benchmarks.stats import percentile
from gateway.usage_recorder import UsageWriter
from sql.pool import create_pool

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
_MESSAGES = [{"role": "user", "content": "Say hello."}]
PREFIX = "faults:"
STREAM = PREFIX + "usage:records"
GROUP = PREFIX + "usage-writers"
# Tokens per answer, and the worker's delay per token: a stream lasts ~16 x 10 ms, so a kill or an
# outage always finds some in flight.
_TOKENS = 16
_TOKEN_DELAY_MS = 10.0
# The driver's bound on requests in flight: an outage that stalls answers cannot pile up without end.
_MAX_IN_FLIGHT = 400
_REQUEST_TIMEOUT_S = 30.0
# How long to wait for every record to reach Postgres after the load, before calling the rest lost.
_DRAIN_TIMEOUT_S = 180.0
_POLL_S = 0.2
_STALE_AFTER_S = 86_400
_FINAL_ROWS = "SELECT correlation_id FROM finops.inference_usage WHERE status <> 'incomplete'"
_ALL_ROWS = "SELECT correlation_id, status FROM finops.inference_usage"
_METRIC = re.compile(r'^(inventiv_gateway_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$', re.MULTILINE)


# -- the load driver ------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the driver saw, by request id."""

    sent: int = 0
    # id -> loop time its answer was complete.
    completed: dict[str, float] = field(default_factory=dict)
    # Streams whose 200 and headers arrived (the gateway had opened them).
    streams_opened: set[str] = field(default_factory=set)
    streams: set[str] = field(default_factory=set)
    # (loop time, HTTP status) of answers other than 200; (loop time, exception name) of failures.
    statuses: list[tuple[float, int]] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def server_errors(self, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(1 for at, status in self.statuses if status >= 500 and since <= at <= until)

    def completed_between(self, since: float, until: float) -> int:
        return sum(1 for at in self.completed.values() if since <= at <= until)


class Driver:
    """Chat requests to one gateway, in an open loop at `rate` a second."""

    def __init__(self, base: str, key: str, run: str, *, stream_every: int = 4, session_every: int = 4,
                 paced: bool = True) -> None:  # fmt: skip
        self.base = base
        # Not paced: the worker answers at once (the request overrides its delay per token).
        self.paced = paced
        self.key = key
        self.run = run
        self.stream_every = stream_every
        self.session_every = session_every
        self.tally = Tally()
        self._loop = asyncio.get_running_loop()

    async def open_loop(self, rate: float, stop: asyncio.Event) -> None:
        async with self._session() as session:
            tasks: set[asyncio.Task[None]] = set()
            began = self._loop.time()
            n = 0
            while not stop.is_set():
                n += 1
                if len(tasks) < _MAX_IN_FLIGHT:
                    task = asyncio.create_task(self._one(session, n))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                delay = began + n / rate - self._loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
            if tasks:
                await asyncio.wait(tasks, timeout=_REQUEST_TIMEOUT_S)

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=_MAX_IN_FLIGHT)
        return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S))

    async def _one(self, session: aiohttp.ClientSession, n: int) -> None:
        tally = self.tally
        request_id = f"{self.run}-{n}"
        stream = self.stream_every > 0 and n % self.stream_every == 0
        headers = {"Authorization": f"Bearer {self.key}", "X-Request-Id": request_id}
        if self.session_every > 0 and n % self.session_every == 1:
            # A new session each time: a pin the gateway remembers would not ask Redis.
            headers["X-Inventiv-Session"] = f"{self.run}-session-{n}"
        body: dict[str, Any] = {"model": MODEL, "messages": _MESSAGES, "stream": stream}
        if not self.paced:
            body["mock"] = {"delay_ms": 0}
        tally.sent += 1
        if stream:
            tally.streams.add(request_id)
        sent = self._loop.time()
        try:
            async with session.post(f"{self.base}/v1/chat/completions", json=body, headers=headers) as resp:
                if resp.status != 200:
                    tally.statuses.append((self._loop.time(), resp.status))
                    await resp.read()
                    return
                if stream:
                    tally.streams_opened.add(request_id)
                data = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            tally.failures.append((self._loop.time(), type(exc).__name__))
            return
        if (data.endswith(b"data: [DONE]\n\n") if stream else data.startswith(b"{")):
            done = self._loop.time()
            tally.completed[request_id] = done
            tally.latencies_ms.append((done - sent) * 1000)


# -- the processes --------------------------------------------------------------------------------------


@dataclass
class FaultStack:
    run_dir: Path
    postgres: PrivatePostgres
    redis: PrivateRedis
    api_key: str
    env: dict[str, str]
    gateways: list[Started] = field(default_factory=list)

    async def start_gateway(self, name: str, **env: str) -> tuple[Started, str]:
        endpoint = Endpoint(LOOPBACK, free_port())
        argv = [sys.executable, "-m", "inventiv", "gateway", "--workers", "1", "--port", str(endpoint.port)]
        gateway = await start(name, argv, cpu=1, log_dir=self.run_dir, env={**self.env, **env}, cwd=self.run_dir)
        self.gateways.append(gateway)
        await wait_ready(gateway, endpoint, get_request(endpoint, "/readyz"))
        return gateway, f"http://{LOOPBACK}:{endpoint.port}"

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        pool = await create_pool(self.postgres.url, maxsize=1)
        try:
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute(sql)
                return list(await cur.fetchall())
        finally:
            pool.close()
            await pool.wait_closed()


@asynccontextmanager
async def fault_stack(run_dir: Path, redis_args: tuple[str, ...] = ("--save", "", "--appendonly", "yes")
                      ) -> AsyncIterator[FaultStack]:  # fmt: skip
    """A private Postgres (migrated, seeded) and Redis, and a mock worker; gateways started on demand."""
    async with AsyncExitStack() as exits:
        postgres = await asyncio.to_thread(PrivatePostgres(run_dir / "postgres").init)
        exits.callback(postgres.stop)
        private_redis = await asyncio.to_thread(PrivateRedis(run_dir / "redis", redis_args).start)
        exits.callback(private_redis.stop)
        port = free_port()
        argv = [sys.executable, "-m", "providers.mock.worker", "--port", str(port), "--model", MODEL,
                "--tokens", str(_TOKENS), "--token-delay-ms", str(_TOKEN_DELAY_MS)]  # fmt: skip
        worker = await start("worker", argv, cpu=0, log_dir=run_dir, cwd=run_dir)
        exits.push_async_callback(stop, worker)
        await wait_ready(worker, Endpoint(LOOPBACK, port), get_request(Endpoint(LOOPBACK, port), "/health"))
        api_key, _ = await prepare_database(postgres.url, {MODEL: (LOOPBACK, port)})
        env = {
            **os.environ,
            "INVENTIV_DATABASE_URL": postgres.url, "INVENTIV_REDIS_URL": private_redis.url,
            "INVENTIV_REDIS_PREFIX": PREFIX, "INVENTIV_LOG_LEVEL": "WARNING",
            "INVENTIV_DATA_DIR": str(run_dir / "gateway-data"), "INVENTIV_WORKER_STALE_AFTER_S": str(_STALE_AFTER_S),
            "INVENTIV_WORKER_SECRET_KEY": secrets.token_urlsafe(48),
        }  # fmt: skip
        stack = FaultStack(run_dir, postgres, private_redis, api_key, env)
        try:
            yield stack
        finally:
            for gateway in stack.gateways:
                await stop(gateway)


async def scrape(base: str) -> dict[str, float]:
    """The gateway's own metrics, `name{labels}` -> value."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as resp:
        text = await resp.text()
    return {name + (labels or ""): float(value) for name, labels, value in _METRIC.findall(text)}


def rss_mib(gateway: Started) -> float:
    return procfs.tree_memory_kb(gateway.pid)[1] / 1024


# -- checking the records -------------------------------------------------------------------------------


@dataclass
class Books:
    lost: int
    doubled: int
    # Streams the driver had opened that never completed, and how many of them left a row.
    cut_streams: int
    cut_streams_with_row: int


async def reconcile(stack: FaultStack, tally: Tally) -> Books:
    rows = await stack.rows(_ALL_ROWS)
    final = [cid for cid, status in rows if status != "incomplete"]
    final_set = set(final)
    counted = await stack.rows("SELECT coalesce(sum(total_requests), 0) FROM instance_request_metrics")
    doubled = (len(final) - len(final_set)) + max(0, int(counted[0][0]) - len(final))
    lost = sum(1 for request_id in tally.completed if request_id not in final_set)
    cut = tally.streams_opened - tally.completed.keys()
    with_row = {cid for cid, _ in rows}
    return Books(lost, doubled, len(cut), sum(1 for request_id in cut if request_id in with_row))


async def seconds_to_drain(stack: FaultStack, ids: set[str], since: float) -> float | None:
    """Seconds from `since` (loop time) until every id in `ids` has its final row; None: not within the limit."""
    loop = asyncio.get_running_loop()
    while loop.time() - since < _DRAIN_TIMEOUT_S:
        present = {cid for (cid,) in await stack.rows(_FINAL_ROWS)}
        if ids <= present:
            return loop.time() - since
        await asyncio.sleep(_POLL_S)
    return None


async def drain_stream(stack: FaultStack) -> None:
    """Write what a killed gateway left in the stream, its pending entries included (claimed at once)."""
    redis = aioredis.Redis.from_url(stack.redis.url)
    pool = await create_pool(stack.postgres.url, maxsize=2)
    try:
        writer = UsageWriter(redis, pool, STREAM, GROUP, consumer="faults-drain", block_ms=10, claim_idle_ms=1)
        await writer.ensure_group()
        deadline = asyncio.get_running_loop().time() + _DRAIN_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            handled = await writer.step(block=False)
            pending = await redis.xpending(STREAM, GROUP)
            if handled == 0 and await redis.xlen(STREAM) == 0 and not pending["pending"]:
                return
            await asyncio.sleep(0.01)
    finally:
        await redis.aclose()
        pool.close()
        await pool.wait_closed()


# -- the scenarios --------------------------------------------------------------------------------------


@dataclass
class OutageFigures:
    service: str
    outage_s: float
    rate: float
    sent: int
    completed: int
    completed_during_outage: int
    server_errors: int
    failures: int
    lost: int
    doubled: int
    drain_s: float | None
    affinity_unavailable: float
    buffered_peak: float
    buffered_bytes_peak: float
    dropped: float
    rss_before_mib: float
    rss_during_mib: float
    rss_after_mib: float


async def outage(stack: FaultStack, service: str, *, outage_s: float, rate: float, warm_s: float = 3.0,
                 after_s: float = 3.0) -> OutageFigures:  # fmt: skip
    """Stop `service` ("postgres" or "redis") for `outage_s` under load at `rate` req/s."""
    loop = asyncio.get_running_loop()
    gateway, base = await stack.start_gateway(f"gateway-{service}")
    driver = Driver(base, stack.api_key, f"{service}-{secrets.token_hex(3)}")
    stopping = asyncio.Event()
    load = asyncio.create_task(driver.open_loop(rate, stopping))
    await asyncio.sleep(warm_s)
    rss_before = rss_mib(gateway)
    went = loop.time()
    if service == "postgres":
        await asyncio.to_thread(stack.postgres.stop)
    else:
        await asyncio.to_thread(stack.redis.stop, signal.SIGTERM)
    rss_during = buffered_peak = buffered_bytes_peak = 0.0
    while loop.time() - went < outage_s:
        await asyncio.sleep(min(1.0, outage_s))
        rss_during = max(rss_during, rss_mib(gateway))
        metrics = await scrape(base)
        buffered_peak = max(buffered_peak, metrics.get("inventiv_gateway_usage_buffered", 0.0))
        buffered_bytes_peak = max(buffered_bytes_peak, metrics.get("inventiv_gateway_usage_buffered_bytes", 0.0))
    if service == "postgres":
        await asyncio.to_thread(stack.postgres.start)
    else:
        await asyncio.to_thread(stack.redis.start)
    back = loop.time()
    before_back = {rid for rid, at in driver.tally.completed.items() if at <= back}
    drain = asyncio.create_task(seconds_to_drain(stack, before_back, back))
    await asyncio.sleep(after_s)
    stopping.set()
    await load
    drain_s = await drain
    await seconds_to_drain(stack, set(driver.tally.completed), loop.time())
    # After the drain (the buffer flushed) and a pause: what the process kept of the outage.
    await asyncio.sleep(2.0)
    rss_after = rss_mib(gateway)
    metrics = await scrape(base)
    books = await reconcile(stack, driver.tally)
    await stop(gateway)
    tally = driver.tally
    return OutageFigures(
        service=service, outage_s=outage_s, rate=rate, sent=tally.sent, completed=len(tally.completed),
        completed_during_outage=tally.completed_between(went, back), server_errors=tally.server_errors(),
        failures=len(tally.failures), lost=books.lost, doubled=books.doubled, drain_s=drain_s,
        affinity_unavailable=metrics.get('inventiv_gateway_affinity_total{result="unavailable"}', 0.0),
        buffered_peak=buffered_peak, buffered_bytes_peak=buffered_bytes_peak,
        dropped=metrics.get("inventiv_gateway_usage_dropped_total", 0.0),
        rss_before_mib=rss_before, rss_during_mib=rss_during, rss_after_mib=rss_after,
    )  # fmt: skip


@dataclass
class KillFigures:
    durability: str
    rate: float
    completed: int
    # Completed requests (the whole answer reached the driver) without their final usage row.
    completed_unrecorded: int
    doubled: int
    cut_streams: int
    cut_streams_with_row: int


async def sigkill(stack: FaultStack, durability: str, *, rate: float, warm_s: float = 3.0) -> KillFigures:
    """SIGKILL the gateway under load; then write what it left in the stream and count."""
    gateway, base = await stack.start_gateway(f"gateway-kill-{durability}", INVENTIV_USAGE_DURABILITY=durability)
    driver = Driver(base, stack.api_key, f"kill-{durability}-{secrets.token_hex(3)}")
    stopping = asyncio.Event()
    load = asyncio.create_task(driver.open_loop(rate, stopping))
    await asyncio.sleep(warm_s)
    gateway.process.kill()
    await gateway.process.wait()
    stopping.set()
    await load
    await drain_stream(stack)
    books = await reconcile(stack, driver.tally)
    return KillFigures(durability, rate, len(driver.tally.completed), books.lost, books.doubled, books.cut_streams,
                       books.cut_streams_with_row)  # fmt: skip


@dataclass
class CostFigures:
    durability: str
    stream: bool
    requests: int
    cpu_us_per_request: float
    p50_ms: float | None
    p99_ms: float | None


async def cost(stack: FaultStack, *, rate: float, duration_s: float, reps: int) -> list[CostFigures]:
    """Gateway CPU and client latency per request at `rate` req/s (open loop, below saturation, so that
    latency is the request's own and not a queue's), buffered and durable alternated `reps` times."""
    gateways = {mode: await stack.start_gateway(f"gateway-cost-{mode}", INVENTIV_USAGE_DURABILITY=mode)
                for mode in ("buffered", "durable")}  # fmt: skip
    figures = []
    for stream in (False, True):
        totals: dict[str, list[float]] = {mode: [0.0, 0.0] for mode in gateways}
        latencies: dict[str, list[float]] = {mode: [] for mode in gateways}
        for _ in range(reps):
            for mode, (gateway, base) in gateways.items():
                driver = Driver(base, stack.api_key, f"cost-{mode}-{secrets.token_hex(3)}",
                                stream_every=1 if stream else 0, session_every=0, paced=False)  # fmt: skip
                cpu = procfs.tree_cpu_seconds(gateway.pid)
                stopping = asyncio.Event()
                asyncio.get_running_loop().call_later(duration_s, stopping.set)
                await driver.open_loop(rate, stopping)
                totals[mode][0] += procfs.tree_cpu_seconds(gateway.pid) - cpu
                totals[mode][1] += len(driver.tally.completed)
                latencies[mode] += driver.tally.latencies_ms
        for mode, (cpu_s, count) in totals.items():
            figures.append(CostFigures(mode, stream, int(count), cpu_s / max(count, 1) * 1e6,
                                       percentile(latencies[mode], 50), percentile(latencies[mode], 99)))  # fmt: skip
    for gateway, _ in gateways.values():
        await stop(gateway)
    return figures


# -- the command ----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s outages at 100 req/s: a smoke run")
    parser.add_argument("--rate", type=float, default=300.0, help="requests a second during the outages")
    parser.add_argument("--postgres-s", type=float, default=60.0, help="length of the Postgres outage")
    parser.add_argument("--redis-s", type=float, default=30.0, help="length of the Redis outage")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs per usage durability")
    parser.add_argument("--only", default="postgres,redis,sigkill,cost", help="comma-separated scenarios to run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser


async def run_all(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    rate = 100.0 if args.quick else args.rate
    postgres_s, redis_s = (5.0, 5.0) if args.quick else (args.postgres_s, args.redis_s)
    only = set(args.only.split(","))
    found: dict[str, Any] = {}
    async with fault_stack(run_dir) as stack:
        for service, outage_s in (("postgres", postgres_s), ("redis", redis_s)):
            if service in only:
                found[service] = asdict(await outage(stack, service, outage_s=outage_s, rate=rate))
                print(json.dumps(found[service]), flush=True)
        if "sigkill" in only:
            kills = 1 if args.quick else args.kills
            found["sigkill"] = [asdict(await sigkill(stack, mode, rate=rate))
                                for _ in range(kills) for mode in ("buffered", "durable")]  # fmt: skip
            print(json.dumps(found["sigkill"]), flush=True)
        if "cost" in only:
            reps = 1 if args.quick else 3
            costs = await cost(stack, rate=200.0, duration_s=3.0 if args.quick else 10.0, reps=reps)
            found["cost"] = [asdict(c) for c in costs]
            print(json.dumps(found["cost"]), flush=True)
    return found


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="inventiv-faults-") as run_dir:
        os.chmod(run_dir, 0o755)  # the private Postgres runs as its own user when we are root
        found = asyncio.run(run_all(args, Path(run_dir)))
    if args.json is not None:
        args.json.write_text(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
