"""Soak: the gateway at a steady 70 % of its measured maximum for N minutes, watched for leaks.

    python -m benchmarks.soak [--minutes N] [--rate R] [--interpreted]   (`make soak`, SOAK_MINUTES=1 by default)

Starts, as the gateway benchmark does, its own Postgres database and Redis prefix, two mock workers
(CPU 0) and the gateway (one process, CPU 1; compiled with mypyc as a production install builds it,
benchmarks/compiled.py, unless `--interpreted`) with authentication, routing, usage recording to Redis
and Postgres and, on half the requests, session affinity. Then:

1. opens 200 long paced streams (100 chunks 100 ms apart, each with a session of its own) and keeps
   them open for the whole run: each connection asks for its next stream as soon as one ends;
2. with those streams open, measures the maximum non-streaming rate (closed loop, 64 connections, a few
   seconds): the soak's rate is 70 % of it, so the streams' own cost is not counted as headroom;
3. offers that rate open loop for N minutes; after every interval (a minute, or 10 s for runs under
   2 minutes) samples the gateway's process tree (the lowest VmRSS read every second over the
   interval, open fds at its end) and the interval's latency p99;
4. lets the last streams end, waits for the usage writer, and counts the usage rows of the run's key.

Judgements (exit 1 on any failure, with a line naming it), from the end of the warm-up (the first two
minutes, WARMUP_S): the lowest RSS of the run's last half less than 5 %
above it, the fewest open fds of the run's last half at most FD_TOLERANCE above it, 200 streams open at
every sample, no errors, no answer that differs from the worker's, at most 1 % of the scheduled requests
not sent, and a usage row for every completed request. `--rate` offers a fixed rate instead of 70 % of
the maximum (a busy machine's maximum moves; compare runs at one rate). See benchmarks/RESULTS.md
("Soak") for a recorded run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import math
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import uvloop

from benchmarks import compiled, procfs
from benchmarks.gateway_bench import pin_to_load_cpu
from benchmarks.integrity import ExpectedBody
from benchmarks.loadgen import (
    REQUEST_ERRORS,
    Connection,
    Endpoint,
    LoadResult,
    build_request,
    closed_loop,
    fetch,
    open_loop,
)
from benchmarks.processes import LOOPBACK, ProcessFailed, Started
from benchmarks.scenarios import CHAT
from benchmarks.services import bench_services, prepare_database
from benchmarks.stack import WorkerSpec, chat_body, gateway_env, start_gateway, start_worker, worker_specs
from benchmarks.stats import percentile
from sql.api_key_store import create_api_key
from sql.pool import create_pool
from sql.queries import queries
from sql.seed import DEMO_ORG

# The figures: 200 streams open throughout, 70 % of the measured maximum, RSS growth under 5 %.
STREAMS = 200
LOAD_SHARE = 0.70
RSS_GROWTH_LIMIT = 0.05
# The fewest open fds of the run's last half may exceed those at the end of the warm-up by this many.
# Two pools follow the load's momentary concurrency: idle upstream keep-alive connections to the fast
# worker, and the Redis pool (it keeps what it opened at its busiest); on a busy 2-core machine they moved
# by 15-30 between samples, and by 300 in one 10 s interval of a CI run at 3,600 req/s. The floor, as for
# RSS: a leak lifts every sample, the fewest included. A leak of one fd per 1,000 requests exceeds the
# tolerance within a minute at 1,000 req/s.
FD_TOLERANCE = 40
# Scheduled requests the open-loop driver may leave unsent (every one of its 256 connections waiting
# on an answer) before the rate counts as not sustained: a pause of the gateway under 0.2 s at 3,600 req/s
# (a CI run at 70 % of a maximum measured over 5 s left 726 of 242,634 unsent, 0.3 %).
SKIPPED_TOLERANCE = 0.01
# Streams of 100 chunks 100 ms apart: 10 s each, so every stream spans a 10 s interval and 20 are
# re-opened each second (2,000 chunks/s through the gateway, a few % of its core).
_STREAM_TOKENS = 100
_STREAM_DELAY_MS = 100.0
_STREAM_TIMEOUT_S = 60.0
# The maximum rate: as the gateway benchmark's (a), 64 connections back to back, but for a few
# seconds only: the figure sets a load level, it is not itself a result.
_PROBE_CONCURRENCY = 64
_PROBE_S = 5.0
# Sampling intervals: a minute, or 10 s when the run is too short for several minutes after the warm-up.
_INTERVAL_S = 60.0
_SHORT_INTERVAL_S = 10.0
_SHORT_RUN_MINUTES = 5.0
# The warm-up, not judged: the gateway's RSS climbs for about 100 s after the probe, then levels (the
# lowest VmRSS of each minute at 1,000 req/s: 81.1, 116.7, 118.1 MB; the glibc heap fills to what the
# load's concurrency needs). Judging from an earlier point counts that climb as a leak: runs under
# _SHORT_RUN_MINUTES (CI's) report RSS but do not judge it, and take 30 s of warm-up for the rest.
WARMUP_S = 120.0
_SHORT_WARMUP = 3
# VmRSS is read this often during each interval, and the interval keeps the lowest reading: RSS swings by
# 10-25 MB within seconds under load (glibc's heap gives freed memory back only from its top, and the
# buffers of the requests in flight come and go), so one reading at an interval's end lands anywhere on
# that saw-tooth. A 60 s CI run at 3,300 req/s read 83 -> 111 -> 93 MB at three interval ends with no
# leak. A leak lifts every reading, the lowest included.
_RSS_EVERY_S = 1.0
# Give the gateway this long to close the connections the interval's load driver just closed.
_SAMPLE_SETTLE_S = 0.2
# The usage writer writes every 0.5 s, or at once under load; rows still missing after this are lost.
_USAGE_WAIT_S = 20.0
_USAGE_POLL_S = 0.5
# After a failed stream, wait before the next on that connection (a dead gateway: not a busy loop).
_ERROR_PAUSE_S = 0.1

_REDIS_PORT, _POSTGRES_PORT = 6379, 5432

_COUNT_USAGE = """
SELECT stream, count(*) FROM finops.inference_usage WHERE api_key_id = %(key)s AND status = 'success'
GROUP BY stream
"""


# -- judgement (pure) ------------------------------------------------------------------------------


def interval_s(minutes: float) -> float:
    return _SHORT_INTERVAL_S if minutes < _SHORT_RUN_MINUTES else _INTERVAL_S


def interval_p99_ms(latencies_s: Sequence[float]) -> float | None:
    """The interval's p99 in ms; None when nothing completed (never a zero)."""
    p99 = percentile(latencies_s, 99)
    return None if p99 is None else 1000.0 * p99


CLIENTS, WORKERS, REDIS, POSTGRES, OTHER = "clients", "workers", "redis", "postgres", "other"
FD_KINDS = (CLIENTS, WORKERS, REDIS, POSTGRES, OTHER)


def fd_kinds(targets: Sequence[str], tcp: Mapping[int, tuple[int, int]], roles: Mapping[int, str]) -> dict[str, int]:
    """Open fds by what they are: a TCP socket whose local or remote port has a role (the gateway's
    port: its listener and client connections; a worker's, Redis's, Postgres's) counts for that role;
    anything else (other sockets, pipes, files, epoll) is OTHER."""
    counts = dict.fromkeys(FD_KINDS, 0)
    for target in targets:
        kind = OTHER
        if target.startswith("socket:["):
            local, remote = tcp.get(int(target[len("socket:[") : -1]), (0, 0))
            kind = roles.get(local) or roles.get(remote) or OTHER
        counts[kind] += 1
    return counts


@dataclass(frozen=True, slots=True)
class Sample:
    """One interval: the gateway's tree at its end, and what the load saw during it."""

    at_s: float
    rss_kb: int
    fds: int
    # Open fds per kind (FD_KINDS), from fd_kinds().
    fd_kinds: dict[str, int]
    requests: int
    p99_ms: float | None
    streams_done: int
    streams_open: int
    # Errors, non-2xx answers, differing answers and unsent requests, of both kinds of load.
    problems: int


def warmup_intervals(minutes: float) -> int:
    """Intervals that are warm-up: those of the first WARMUP_S, or of the first 30 s of a short run (which
    judges fds, errors and usage rows, not RSS: `judges_rss`)."""
    if not judges_rss(minutes):
        return _SHORT_WARMUP
    return math.ceil(WARMUP_S / interval_s(minutes))


def judges_rss(minutes: float) -> bool:
    """Whether a run this long judges RSS growth: a shorter one ends inside the heap's first climb."""
    return minutes >= _SHORT_RUN_MINUTES


def rss_floor(samples: Sequence[Sample], warmup: int) -> int:
    """The lowest RSS over the last half of the samples after the warm-up, in kB.

    The lowest, not the last: glibc's heap keeps what the gateway freed until the top of the heap is
    free too, so RSS climbs and falls back by 10-20 MB with no change in what the process holds (see
    benchmarks/RESULTS.md, "Soak"). A leak lifts every sample, the lowest included."""
    after = samples[warmup:]
    return min(s.rss_kb for s in after[len(after) // 2 :])


def rss_growth(samples: Sequence[Sample], warmup: int) -> float:
    """Growth of RSS from the end of the warm-up to the floor of the run's last half, as a fraction."""
    baseline = samples[warmup - 1].rss_kb
    return (rss_floor(samples, warmup) - baseline) / baseline


def fd_floor(samples: Sequence[Sample], warmup: int) -> int:
    """The fewest open fds over the last half of the samples after the warm-up (as `rss_floor`)."""
    after = samples[warmup:]
    return min(s.fds for s in after[len(after) // 2 :])


def fd_growth(samples: Sequence[Sample], warmup: int) -> int:
    """The fewest open fds of the run's last half less those at the end of the warm-up (negative: fewer)."""
    return fd_floor(samples, warmup) - samples[warmup - 1].fds


def fd_swing(samples: Sequence[Sample], warmup: int) -> tuple[int, int]:
    """The fewest and the most open fds from the end of the warm-up on, for the report."""
    seen = [s.fds for s in samples[warmup - 1 :]]
    return min(seen), max(seen)


@dataclass
class Totals:
    """What the whole run's load saw (probe, intervals and streams), and the usage rows it left."""

    requests: LoadResult = field(default_factory=LoadResult)
    streams: LoadResult = field(default_factory=LoadResult)
    usage_rows: int = 0

    @property
    def completed(self) -> int:
        return self.requests.ok + self.streams.ok


@dataclass(frozen=True, slots=True)
class Judgement:
    name: str
    measured: str
    passed: bool


def _failures(result: LoadResult) -> int:
    return result.errors + result.non_2xx


def judge(samples: Sequence[Sample], warmup: int, totals: Totals, *, rss: bool = True) -> list[Judgement]:
    """Every judgement of the run; RSS growth only when `rss` (`judges_rss`), else reported as passed."""
    if len(samples) <= warmup:
        return [Judgement("samples after the warm-up", f"{len(samples)} samples, warm-up {warmup}", False)]
    growth = rss_growth(samples, warmup)
    peak = max(s.rss_kb for s in samples[warmup:])
    fd_added = fd_growth(samples, warmup)
    fewest, most = fd_swing(samples, warmup)
    base = samples[warmup - 1]
    fewest_open = min(s.streams_open for s in samples)
    failures = _failures(totals.requests) + _failures(totals.streams)
    mismatched = totals.requests.mismatched + totals.streams.mismatched
    missing = totals.completed - totals.usage_rows
    skipped = totals.requests.skipped
    scheduled = totals.requests.ok + _failures(totals.requests) + skipped
    return [
        Judgement(f"RSS growth after the warm-up < {RSS_GROWTH_LIMIT:.0%}",
                  f"{base.rss_kb / 1024:.1f} MB at the warm-up's end, lowest of the last half "
                  f"{rss_floor(samples, warmup) / 1024:.1f} MB ({growth:+.1%}), highest {peak / 1024:.1f} MB"
                  + ("" if rss else f"; not judged under {_SHORT_RUN_MINUTES:g} minutes"),
                  growth < RSS_GROWTH_LIMIT or not rss),
        Judgement(f"open fds flat after the warm-up (at most {FD_TOLERANCE} more)",
                  f"{base.fds} at the warm-up's end, fewest of the last half {fd_floor(samples, warmup)} "
                  f"({fd_added:+d}; {fewest}-{most} in between)",
                  fd_added <= FD_TOLERANCE),
        Judgement(f"{STREAMS} streams open at every sample", f"at least {fewest_open}", fewest_open >= STREAMS),
        Judgement("zero errors", f"{failures} (first: {_first_error(totals)})" if failures else "0", failures == 0),
        Judgement("every answer identical to the worker's", f"{mismatched} differ", mismatched == 0),
        Judgement(f"at most {SKIPPED_TOLERANCE:.0%} of the scheduled requests not sent",
                  f"{skipped} of {scheduled:,} not sent ({skipped / max(scheduled, 1):.2%})",
                  skipped <= SKIPPED_TOLERANCE * scheduled),
        Judgement("a usage row for every completed request",
                  f"{totals.usage_rows} rows for {totals.completed} completed", missing <= 0),
    ]  # fmt: skip


def _first_error(totals: Totals) -> str | None:
    return totals.requests.first_error or totals.streams.first_error


def render(samples: Sequence[Sample], warmup: int) -> str:
    lines = [
        "| at | VmRSS MB (interval's lowest) | open fds | "
        + " | ".join(f"fds: {k}" for k in FD_KINDS)
        + " | requests | p99 ms | streams done | streams open | problems |",
        "|---:|---:|---:|" + "---:|" * len(FD_KINDS) + "---:|---:|---:|---:|---:|",
    ]
    for i, s in enumerate(samples):
        at = f"{s.at_s:.0f} s" + (" (warm-up)" if i < warmup else "")
        p99 = "—" if s.p99_ms is None else f"{s.p99_ms:.1f}"
        kinds = " | ".join(str(s.fd_kinds.get(k, 0)) for k in FD_KINDS)
        lines.append(f"| {at} | {s.rss_kb / 1024:.1f} | {s.fds} | {kinds} | {s.requests:,} | {p99} | "
                     f"{s.streams_done:,} | {s.streams_open} | {s.problems} |")  # fmt: skip
    return "\n".join(lines)


# -- load ------------------------------------------------------------------------------------------


class StreamHolder:
    """`len(requests)` connections, each asking for its next stream as soon as one ends, until stopped.

    `take()` hands over what completed since the previous call, so each interval gets its own figures."""

    def __init__(self, endpoint: Endpoint, requests: Sequence[bytes], expected: ExpectedBody) -> None:
        self._endpoint = endpoint
        self._requests = requests
        self._expected = expected
        self._result = LoadResult()
        self._stopping = False
        self.in_flight = 0
        # Set once every connection has had a stream in flight at the same time.
        self.all_open = asyncio.Event()

    def take(self) -> LoadResult:
        result, self._result = self._result, LoadResult()
        return result

    def stop(self) -> None:
        """No new streams; those open run to their end."""
        self._stopping = True

    async def run(self, stagger_s: float) -> None:
        count = len(self._requests)
        await asyncio.gather(*(self._hold(r, stagger_s * i / count) for i, r in enumerate(self._requests)))

    async def _hold(self, request: bytes, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        conn: Connection | None = None
        while not self._stopping:
            self.in_flight += 1
            if self.in_flight == len(self._requests):
                self.all_open.set()
            try:
                if conn is None or conn.closed:
                    conn = await Connection.open(self._endpoint)
                response = await conn.send(request, _STREAM_TIMEOUT_S)
            except REQUEST_ERRORS as exc:
                self._result.error(exc)
                if conn is not None:
                    conn.close()
                await asyncio.sleep(_ERROR_PAUSE_S)
                continue
            finally:
                self.in_flight -= 1
            self._result.add(response, response.sent_at, self._expected)
        if conn is not None:
            conn.close()


def _merge(into: LoadResult, part: LoadResult) -> None:
    into.ok += part.ok
    into.non_2xx += part.non_2xx
    into.errors += part.errors
    into.mismatched += part.mismatched
    into.skipped += part.skipped
    into.first_error = into.first_error or part.first_error
    into.first_mismatch = into.first_mismatch or part.first_mismatch


def _problems(*results: LoadResult) -> int:
    return sum(_failures(r) + r.mismatched + r.skipped for r in results)


# -- the run ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Soak:
    """What the run drives: the gateway, the requests (with the run's key) and the worker's answers."""

    gateway: Started
    endpoint: Endpoint
    with_session: bytes
    without_session: bytes
    expected: ExpectedBody
    streams: list[bytes]
    stream_expected: ExpectedBody
    database_url: str
    key_id: str
    # Port -> fd kind, to tell the gateway's sockets apart.
    port_roles: dict[int, str]


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _reference(worker: Endpoint, body: bytes) -> ExpectedBody:
    response = await fetch(worker, build_request("POST", worker, CHAT, body), timeout_s=_STREAM_TIMEOUT_S)
    if response.status != 200:
        raise RuntimeError(f"the worker answered {response.status} to the reference request")
    return ExpectedBody.from_reference(response.body)


async def _create_key(database_url: str) -> tuple[str, str]:
    """An inference key of the soak's own, so that its usage rows can be counted apart."""
    pool = await create_pool(database_url, maxsize=1)
    try:
        async with pool.acquire() as conn:
            org = await queries.organizations.get_organization_by_slug(conn, slug=DEMO_ORG)
            created = await create_api_key(conn, org["id"], "soak", ["inference"])
    finally:
        pool.close()
        await pool.wait_closed()
    return created.key, str(created.row["id"])


async def _start(exits: AsyncExitStack, run_dir: Path, compiled_dir: Path | None) -> Soak:
    specs: tuple[WorkerSpec, ...] = tuple(s for s in worker_specs(0.0, _STREAM_DELAY_MS) if s.role != "paced")
    services = await exits.enter_async_context(bench_services(run_dir))
    workers = {spec.role: await start_worker(exits, spec, run_dir) for spec in specs}
    models = {spec.role: spec.model for spec in specs}
    bench_key, _ = await prepare_database(
        services.database_url, {spec.model: (LOOPBACK, workers[spec.role].port) for spec in specs}
    )
    env = gateway_env(services, run_dir, compiled_dir)
    gateway, endpoint = await start_gateway(exits, "gateway", env, run_dir, bench_key, [spec.model for spec in specs])
    key, key_id = await _create_key(services.database_url)
    auth = {"Authorization": f"Bearer {key}"}
    body = chat_body(models["fast"], stream=False)
    stream_body = chat_body(models["slow"], stream=True, max_tokens=_STREAM_TOKENS)
    sessions = [f"soak-{i}" for i in range(STREAMS)]
    return Soak(
        gateway=gateway,
        endpoint=endpoint,
        with_session=build_request("POST", endpoint, CHAT, body, {**auth, "X-Inventiv-Session": "soak"}),
        without_session=build_request("POST", endpoint, CHAT, body, auth),
        expected=await _reference(workers["fast"], body),
        streams=[
            build_request("POST", endpoint, CHAT, stream_body, {**auth, "X-Inventiv-Session": session})
            for session in sessions
        ],
        stream_expected=await _reference(workers["slow"], stream_body),
        database_url=services.database_url,
        key_id=key_id,
        port_roles={
            endpoint.port: CLIENTS,
            **{worker.port: WORKERS for worker in workers.values()},
            urlsplit(services.redis_url).port or _REDIS_PORT: REDIS,
            urlsplit(services.database_url).port or _POSTGRES_PORT: POSTGRES,
        },
    )


async def _interval(soak: Soak, rate: float, seconds: float) -> tuple[tuple[LoadResult, LoadResult], int]:
    """Half the rate with a session header (the affinity lookup), half without, side by side; and the
    lowest VmRSS of the gateway's tree seen while they ran (read every _RSS_EVERY_S)."""
    lowest = [procfs.tree_memory_kb(soak.gateway.pid)[1]]

    async def watch() -> None:
        while True:
            await asyncio.sleep(_RSS_EVERY_S)
            lowest[0] = min(lowest[0], procfs.tree_memory_kb(soak.gateway.pid)[1])

    watcher = asyncio.create_task(watch())
    try:
        with_session, without = await asyncio.gather(
            open_loop(soak.endpoint, soak.with_session, soak.expected, rate=rate / 2, duration_s=seconds),
            open_loop(soak.endpoint, soak.without_session, soak.expected, rate=rate / 2, duration_s=seconds),
        )
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return (with_session, without), lowest[0]


async def _sample(soak: Soak, holder: StreamHolder, at_s: float, loads: Sequence[LoadResult],
                  streams: LoadResult, lowest_rss_kb: int) -> Sample:  # fmt: skip
    rss_kb = min(lowest_rss_kb, procfs.tree_memory_kb(soak.gateway.pid)[1])
    targets = procfs.tree_fd_targets(soak.gateway.pid)
    return Sample(
        at_s=at_s,
        rss_kb=rss_kb,
        fds=len(targets),
        fd_kinds=fd_kinds(targets, procfs.read_tcp_ports(), soak.port_roles),
        requests=sum(r.ok for r in loads),
        p99_ms=interval_p99_ms([x for r in loads for x in r.latencies_s]),
        streams_done=streams.ok,
        streams_open=holder.in_flight,
        problems=_problems(*loads, streams),
    )


async def _count_usage(database_url: str, key_id: str, expected: int) -> int:
    """Success rows of the soak's key, once they reach `expected` or the writer has had its time."""
    pool = await create_pool(database_url, maxsize=1)
    deadline = time.monotonic() + _USAGE_WAIT_S
    try:
        while True:
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute(_COUNT_USAGE, {"key": key_id})
                rows = sum(int(count) for _, count in await cur.fetchall())
            if rows >= expected or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(_USAGE_POLL_S)
    finally:
        pool.close()
        await pool.wait_closed()


async def _soak(
    soak: Soak, minutes: float, fixed_rate: float | None, totals: Totals
) -> tuple[list[Sample], float, float]:
    """Streams, probe, intervals; returns the samples, the measured maximum rate and the offered rate."""
    holder = StreamHolder(soak.endpoint, soak.streams, soak.stream_expected)
    stream_seconds = _STREAM_TOKENS * _STREAM_DELAY_MS / 1000
    # Starts spread over one stream's length, so that streams do not end (and re-open) together.
    streams = asyncio.create_task(holder.run(stagger_s=stream_seconds))
    samples: list[Sample] = []
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(holder.all_open.wait(), stream_seconds + _STREAM_TIMEOUT_S)
        _progress(f"{holder.in_flight} streams open; measuring the maximum rate for {_PROBE_S:.0f} s")
        probe = await closed_loop(soak.endpoint, soak.with_session, soak.expected,
                                  concurrency=_PROBE_CONCURRENCY, duration_s=_PROBE_S)  # fmt: skip
        _merge(totals.requests, probe)
        max_rate = probe.ok / probe.wall_s
        rate = fixed_rate or LOAD_SHARE * max_rate
        _merge(totals.streams, holder.take())
        step_s = interval_s(minutes)
        count = max(1, math.ceil(minutes * 60 / step_s))
        _progress(f"maximum {max_rate:,.0f} req/s; {rate:,.0f} req/s for {count} intervals of {step_s:.0f} s")
        began = time.monotonic()
        for _ in range(count):
            loads, lowest_rss_kb = await _interval(soak, rate, step_s)
            await asyncio.sleep(_SAMPLE_SETTLE_S)
            finished = holder.take()
            for load in (*loads, finished):
                _merge(totals.streams if load is finished else totals.requests, load)
            samples.append(await _sample(soak, holder, time.monotonic() - began, loads, finished, lowest_rss_kb))
            _progress(render(samples[-1:], 0).splitlines()[-1])
    finally:
        holder.stop()
        await streams
    _merge(totals.streams, holder.take())
    return samples, max_rate, rate


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="length of the loaded run (default 1)")
    parser.add_argument("--rate", type=float, help="offer this many req/s instead of 70 %% of the measured maximum")
    parser.add_argument("--interpreted", action="store_true",
                        help="run the gateway as plain Python, not compiled with mypyc (setup.py's INVENTIV_MYPYC=1)")
    return parser


async def _run(minutes: float, rate: float | None, run_dir: Path,
               compiled_dir: Path | None) -> tuple[list[Sample], Totals, float, float]:  # fmt: skip
    totals = Totals()
    async with AsyncExitStack() as exits:
        began = time.monotonic()
        soak = await _start(exits, run_dir, compiled_dir)
        _progress(f"stack up in {time.monotonic() - began:.0f} s; logs in {run_dir}")
        samples, max_rate, rate = await _soak(soak, minutes, rate, totals)
        totals.usage_rows = await _count_usage(soak.database_url, soak.key_id, totals.completed)
    return samples, totals, max_rate, rate


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.minutes <= 0 or (args.rate is not None and args.rate <= 0):
        raise SystemExit("--minutes and --rate must be positive")
    pin_to_load_cpu()
    run_dir = Path(tempfile.mkdtemp(prefix="inventiv-soak-"))
    compiled_dir = compiled.for_run(args.interpreted)
    # Other work on this machine moves latency and RSS: compare it between runs before their figures.
    load_before = os.getloadavg()
    began = time.monotonic()
    try:
        samples, totals, max_rate, rate = uvloop.run(_run(args.minutes, args.rate, run_dir, compiled_dir))
    except ProcessFailed as exc:
        print(f"soak failed: {exc}", file=sys.stderr)
        return 1
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n{stamp}, {time.monotonic() - began:.0f} s, load average {load_before[0]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")  # fmt: skip
    print(f"gateway: {compiled.describe(compiled_dir)}")
    print(
        f"maximum {max_rate:,.0f} req/s with {STREAMS} streams open; offered {rate:,.0f} req/s "
        f"({rate / max_rate:.0%}), {totals.requests.ok:,} requests and {totals.streams.ok:,} streams completed\n"
    )
    warmup = warmup_intervals(args.minutes)
    print(render(samples, warmup))
    judgements = judge(samples, warmup, totals, rss=judges_rss(args.minutes))
    print("\n| judgement | measured | result |\n|---|---|---|")
    for j in judgements:
        print(f"| {j.name} | {j.measured} | {'passed' if j.passed else '**failed**'} |")
    failed = [j for j in judgements if not j.passed]
    for j in failed:
        print(f"soak failed: {j.name}: {j.measured}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
