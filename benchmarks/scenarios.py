"""The measured runs, (a), (a-static) and (b) to (e), each against every target in turn, and how a run is charged.

Each scenario's repetitions interleave the targets (in an order that rotates), so that the host's
noise, which drifts over minutes, falls on all of them alike: ratios within one run are what count.
A run's proxy CPU time covers the load and then the drain until the proxy is idle again, so work a
proxy does after the last answer (the usage writer's batch) is charged too.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from benchmarks import procfs, static_upstream
from benchmarks.integrity import ExpectedBody
from benchmarks.loadgen import (
    Connection,
    Endpoint,
    LoadResult,
    build_request,
    closed_loop,
    fetch,
    hold_streams,
    open_loop,
)
from benchmarks.processes import get_request
from benchmarks.stack import GATEWAY, NGINX, PROXY_CPU, STATIC, Stack, Target, chat_body

log = logging.getLogger(__name__)

CHAT = "/v1/chat/completions"
# A proxy is idle again when it uses less than this share of a CPU over one settle window.
_IDLE_SHARE = 0.05
_SETTLE_WINDOW_S = 0.25
_SETTLE_MAX_S = 10.0
# The longest wait for the usage backlog of earlier runs before (b).
_DRAIN_MAX_S = 300.0


@dataclass(frozen=True)
class Plan:
    reps: int
    a_duration_s: float
    a_static_duration_s: float
    b_duration_s: float
    c_duration_s: float
    d_duration_s: float
    # Tokens per stream held open in (e): with e_delay_ms, how long the streams stay open.
    e_tokens: int
    checks_per_kind: int
    concurrency: int = 64
    rate: float = 200.0
    chunks: int = 100
    d_streams: int = 200
    d_delay_ms: float = 20.0
    e_streams: int = 1000
    # One chunk every 100 ms per stream: 10,000 chunks/s for 1,000 streams, which CPU 0 keeps up with.
    e_delay_ms: float = 100.0


# (a-static) runs are shorter than (a)'s, as the peer harness's (5 s): the static upstream makes every
# proxy run flat out from the first second, and there are seven runs per repetition. (b) runs 30 s, not
# the peer harness's 10: at 200 req/s a 10 s run's p99 is its 20th slowest request, and between two
# quiet runs of that length vllm-router's added p99 moved from +0.65 to +1.19 ms (benchmarks/RESULTS.md).
FULL = Plan(reps=3, a_duration_s=10, a_static_duration_s=5, b_duration_s=30, c_duration_s=10, d_duration_s=8,
            e_tokens=80, checks_per_kind=50)  # fmt: skip
QUICK = Plan(reps=1, a_duration_s=2, a_static_duration_s=1.5, b_duration_s=3, c_duration_s=2, d_duration_s=3,
             e_tokens=40, checks_per_kind=10)  # fmt: skip


@dataclass
class Measured:
    load: LoadResult
    wall_s: float
    # Load window plus drain; None for `direct`.
    proxy_cpu_s: float | None
    # Share of one CPU during the load window only, in percent.
    proxy_cpu_pct: float | None
    # Chat requests, and of them streams, that reached the worker (for nginx: every request it served).
    reached_worker: int
    streams: int
    steal_pct: dict[str, float]
    # CPU 1 busy time that was not the proxy under test (other engineers' work, the idle proxies).
    cpu1_other_pct: float
    # Load window plus drain: how long the proxy's threads were runnable but waited for a CPU (another
    # task ran on theirs); None for `direct`. At a fixed rate, what a request can wait before being read.
    proxy_wait_s: float | None = None


@dataclass
class Held:
    load: LoadResult
    hwm_kb: int
    rss_kb: int
    # Streams that had started when memory was sampled.
    open_streams: int


@dataclass
class Results:
    plan: Plan
    runs: dict[str, dict[str, list[Measured]]] = field(default_factory=dict)
    held: dict[str, Held] = field(default_factory=dict)
    checked: dict[str, LoadResult] = field(default_factory=dict)
    warmup_errors: dict[str, int] = field(default_factory=dict)

    def add(self, scenario: str, target: str, run: Measured) -> None:
        self.runs.setdefault(scenario, {}).setdefault(target, []).append(run)


# Builds, for one target, the coroutine function that runs the load against it.
RunFor = Callable[[Target], Callable[[], Awaitable[LoadResult]]]


@dataclass(frozen=True)
class Load:
    """One kind of request, as bytes per target, with the worker's own answer to check replies by."""

    requests: dict[str, bytes]
    expected: ExpectedBody


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def make_load(stack: Stack, role: str, body: bytes, session: str | None) -> Load:
    """The request for every target, with the gateway's key and, unless None, a session id: the
    gateway then does its affinity lookup on every request, as it does for a chat client."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    if session is not None:
        headers["X-Inventiv-Session"] = session
    requests = {t.name: build_request("POST", t.endpoint, CHAT, body, headers) for t in stack.targets(role)}
    direct = stack.targets(role)[0]
    reference = await fetch(direct.endpoint, requests[direct.name])
    if reference.status != 200:
        raise RuntimeError(f"the {role} worker answered {reference.status} to the reference request")
    return Load(requests, ExpectedBody.from_reference(reference.body))


async def _worker_counts(worker: Endpoint) -> tuple[int, int]:
    response = await fetch(worker, build_request("GET", worker, "/mock/stats"))
    stats = orjson.loads(response.body)
    return int(stats["requests"][CHAT]), int(stats["streams"])


async def _upstream_counts(target: Target) -> tuple[int, int]:
    """(requests, streams) the target's upstream has answered so far."""
    if target.counted_by == NGINX:
        response = await fetch(target.worker, get_request(target.worker, static_upstream.STUB_STATUS))
        return static_upstream.requests_served(response.body.decode()), 0
    return await _worker_counts(target.worker)


def _cpu_seconds(pid: int | None) -> float | None:
    return procfs.tree_cpu_seconds(pid) if pid is not None else None


def _wait_seconds(pid: int | None) -> float | None:
    return procfs.tree_wait_seconds(pid) if pid is not None else None


async def settle(pid: int | None) -> None:
    """Wait until the proxy is idle, so one run's leftovers are not charged to the next."""
    if pid is None:
        return
    began = time.monotonic()
    while time.monotonic() - began < _SETTLE_MAX_S:
        before = procfs.tree_cpu_seconds(pid)
        await asyncio.sleep(_SETTLE_WINDOW_S)
        if procfs.tree_cpu_seconds(pid) - before < _IDLE_SHARE * _SETTLE_WINDOW_S:
            return


async def measure(target: Target, run: Callable[[], Awaitable[LoadResult]]) -> Measured:
    await settle(target.pid)
    reached_before, streams_before = await _upstream_counts(target)
    cpus_before = procfs.read_cpu_times()
    proxy_before = _cpu_seconds(target.pid)
    wait_before = _wait_seconds(target.pid)
    began = time.perf_counter()
    load = await run()
    wall_s = time.perf_counter() - began
    cpus_after = procfs.read_cpu_times()
    proxy_loaded = _cpu_seconds(target.pid)
    await settle(target.pid)
    proxy_after = _cpu_seconds(target.pid)
    wait_after = _wait_seconds(target.pid)
    reached_after, streams_after = await _upstream_counts(target)
    own_reads = static_upstream.OWN_READS_PER_RUN if target.counted_by == NGINX else 0
    proxy_pct = None
    if proxy_before is not None and proxy_loaded is not None:
        proxy_pct = 100.0 * (proxy_loaded - proxy_before) / wall_s
    cpu1 = f"cpu{PROXY_CPU}"
    cpu1_busy = procfs.percent_of_wall(cpus_before.busy, cpus_after.busy, wall_s).get(cpu1, 0.0)
    return Measured(
        load=load,
        wall_s=wall_s,
        proxy_cpu_s=None if proxy_before is None or proxy_after is None else proxy_after - proxy_before,
        proxy_cpu_pct=proxy_pct,
        reached_worker=reached_after - reached_before - own_reads,
        streams=streams_after - streams_before,
        steal_pct=procfs.percent_of_wall(cpus_before.steal, cpus_after.steal, wall_s),
        cpu1_other_pct=max(0.0, cpu1_busy - (proxy_pct or 0.0)),
        proxy_wait_s=None if wait_before is None or wait_after is None else wait_after - wait_before,
    )


# One measured run: the scenario it counts for, where the load goes, and how it is made.
Entry = tuple[str, Target, RunFor]


def rotated(entries: list[Entry], rep: int) -> list[Entry]:
    """The entries starting one further along each repetition, so no target always runs first."""
    shift = rep % len(entries)
    return entries[shift:] + entries[:shift]


def _each(scenario: str, targets: list[Target], run_for: RunFor) -> list[Entry]:
    return [(scenario, target, run_for) for target in targets]


async def _repeat(results: Results, entries: list[Entry]) -> None:
    for rep in range(results.plan.reps):
        for scenario, target, run_for in rotated(entries, rep):
            measured = await measure(target, run_for(target))
            results.add(scenario, target.name, measured)
            load = measured.load
            _progress(
                f"  ({scenario}) rep {rep + 1}/{results.plan.reps} {target.name:<14} ok {load.ok:>7} "
                f"errors {load.errors + load.non_2xx} mismatched {load.mismatched} "
                f"proxy cpu {measured.proxy_cpu_s or 0:.2f} s steal "
                + " ".join(f"{cpu} {pct:.0f}%" for cpu, pct in sorted(measured.steal_pct.items()))
            )


def _closed(load: Load, concurrency: int, duration_s: float, stagger_s: float = 0.0) -> RunFor:
    def for_target(target: Target) -> Callable[[], Awaitable[LoadResult]]:
        return lambda: closed_loop(
            target.endpoint, load.requests[target.name], load.expected,
            concurrency=concurrency, duration_s=duration_s, stagger_s=stagger_s,
        )  # fmt: skip

    return for_target


def _open(load: Load, rate: float, duration_s: float) -> RunFor:
    def for_target(target: Target) -> Callable[[], Awaitable[LoadResult]]:
        return lambda: open_loop(target.endpoint, load.requests[target.name], load.expected, rate=rate,
                                 duration_s=duration_s)  # fmt: skip

    return for_target


async def warm_up(stack: Stack, results: Results) -> None:
    """Open the proxies' upstream connections and let them reach a steady state before measuring."""
    plan = results.plan
    fast = stack.specs["fast"].model
    paced = stack.specs["paced"].model
    runs = [
        ("fast", chat_body(fast, stream=False), plan.concurrency, 1.0),
        ("fast", chat_body(fast, stream=True, max_tokens=plan.chunks), plan.concurrency, 1.0),
        ("paced", chat_body(paced, stream=True, max_tokens=2), plan.d_streams, 0.5),
    ]
    if STATIC in stack.workers:
        runs.append((STATIC, chat_body(stack.model(STATIC), stream=False), plan.concurrency, 1.0))
    for role, body, concurrency, duration_s in runs:
        load = await make_load(stack, role, body, "bench-warm-up")
        for target in stack.targets(role):
            request = load.requests[target.name]
            result = await closed_loop(
                target.endpoint, request, load.expected, concurrency=concurrency, duration_s=duration_s
            )
            failed = result.errors + result.non_2xx + result.mismatched
            results.warmup_errors[target.name] = results.warmup_errors.get(target.name, 0) + failed
            if failed:
                log.warning("warm-up of %s: %s", target.name, result.first_error or result.first_mismatch)


async def check_bodies(stack: Stack, results: Results) -> None:
    """Sequential requests of each kind, every answer compared with the worker's: JSON, a stream, and a
    stream whose client asked for usage (the gateway then passes the usage chunk through)."""
    model = stack.specs["fast"].model
    kinds = [
        chat_body(model, stream=False),
        chat_body(model, stream=True, max_tokens=5),
        chat_body(model, stream=True, max_tokens=5, include_usage=True),
    ]
    for body in kinds:
        load = await make_load(stack, "fast", body, "bench-check")
        for target in stack.targets("fast"):
            result = results.checked.setdefault(target.name, LoadResult())
            conn = await Connection.open(target.endpoint)
            try:
                for _ in range(results.plan.checks_per_kind):
                    response = await conn.send(load.requests[target.name], timeout_s=10.0)
                    result.add(response, response.sent_at, load.expected)
            finally:
                conn.close()


async def run_a(stack: Stack, results: Results) -> None:
    """(a) Non-streaming, `concurrency` connections back to back: max RPS and CPU per request."""
    await _non_streaming(stack, results, "fast", "a", results.plan.a_duration_s)


async def run_a_static(stack: Stack, results: Results) -> None:
    """(a-static) As (a), with nginx's `return 200` of the same bytes as the upstream: the proxies' own cost."""
    if STATIC not in stack.workers:
        _progress(f"  (a-static) skipped: {static_upstream.NGINX_MISSING}")
        return
    await _non_streaming(stack, results, STATIC, "a_static", results.plan.a_static_duration_s)


async def _non_streaming(stack: Stack, results: Results, role: str, scenario: str, duration_s: float) -> None:
    """Every target with a session header; interleaved with them, the gateway without one (what session
    affinity costs) and a twin gateway writing its access log (what one log line per request costs; the
    others log warnings only), with and without the header: the latter is every feature as a plain
    client uses it, the run the CPU target is judged on."""
    concurrency = results.plan.concurrency
    body = chat_body(stack.model(role), stream=False)
    with_session = await make_load(stack, role, body, f"bench-{scenario}")
    without = await make_load(stack, role, body, None)
    gateway = [t for t in stack.targets(role) if t.name == GATEWAY]
    logged = [stack.logged_target(role)]
    await _repeat(results, [
        *_each(scenario, stack.targets(role), _closed(with_session, concurrency, duration_s)),
        *_each(f"{scenario}_no_session", gateway, _closed(without, concurrency, duration_s)),
        *_each(f"{scenario}_access_log", logged, _closed(with_session, concurrency, duration_s)),
        *_each(f"{scenario}_access_log_no_session", logged, _closed(without, concurrency, duration_s)),
    ])  # fmt: skip


async def drain_usage(stack: Stack, limit_s: float = _DRAIN_MAX_S) -> None:
    """Wait until the usage records of earlier runs are in Postgres (at most `limit_s`), and say so.

    A latency run that overlapped the gateways' writers inserting what (a) and (a-static) left in the
    stream would measure Postgres and the writers at work on the same two CPUs, not the request path at
    200 req/s. The writers have kept up so far (36 records waiting, benchmarks/RESULTS.md): this guards it
    and prints it."""
    began = time.monotonic()
    waiting = first = await stack.usage_backlog()
    while waiting and time.monotonic() - began < limit_s:
        await asyncio.sleep(0.5)
        waiting = await stack.usage_backlog()
    print(f"  usage records of earlier runs not yet in Postgres: {first:,}; waited {time.monotonic() - began:.0f} s"
          f"{f', {waiting:,} still waiting' if waiting else ''}", file=sys.stderr, flush=True)  # fmt: skip


async def run_b(stack: Stack, results: Results) -> None:
    """(b) Non-streaming at a fixed offered rate: latency percentiles, direct against each proxy."""
    plan = results.plan
    await drain_usage(stack)
    load = await make_load(stack, "fast", chat_body(stack.specs["fast"].model, stream=False), "bench-b")
    await _repeat(results, _each("b", stack.targets("fast"), _open(load, plan.rate, plan.b_duration_s)))


async def run_c(stack: Stack, results: Results) -> None:
    """(c) Streams of `chunks` chunks with no delay, back to back: chunks/s and CPU per 1,000 chunks.

    The client does not ask for usage, as OpenAI clients do by default: the gateway then asks the worker
    for it and strips the usage chunk, its most expensive streaming path."""
    plan = results.plan
    body = chat_body(stack.specs["fast"].model, stream=True, max_tokens=plan.chunks)
    load = await make_load(stack, "fast", body, "bench-c")
    await _repeat(results, _each("c", stack.targets("fast"), _closed(load, plan.concurrency, plan.c_duration_s)))


async def run_d(stack: Stack, results: Results) -> None:
    """(d) `d_streams` concurrent streams paced at `d_delay_ms` per chunk: time to first chunk."""
    plan = results.plan
    body = chat_body(stack.specs["paced"].model, stream=True, max_tokens=plan.chunks)
    load = await make_load(stack, "paced", body, "bench-d")
    # Starts spread over one stream's length, so the chunks of different streams do not tick together.
    stagger_s = plan.chunks * plan.d_delay_ms / 1000
    run_for = _closed(load, plan.d_streams, plan.d_duration_s, stagger_s)
    await _repeat(results, _each("d", stack.targets("paced"), run_for))


async def run_e(stack: Stack, results: Results) -> None:
    """(e) `e_streams` streams open at once through each proxy: its resident memory meanwhile."""
    plan = results.plan
    body = chat_body(stack.specs["slow"].model, stream=True, max_tokens=plan.e_tokens)
    load = await make_load(stack, "slow", body, "bench-e")
    for target in stack.targets("slow"):
        pid = target.pid
        if pid is None:
            continue
        await settle(pid)

        def sample(started: int, pid: int = pid) -> tuple[int, int, int]:
            return (*procfs.tree_memory_kb(pid), started)

        result, (hwm_kb, rss_kb, open_streams) = await hold_streams(
            target.endpoint, load.requests[target.name], load.expected, count=plan.e_streams, while_open=sample
        )
        results.held[target.name] = Held(result, hwm_kb, rss_kb, open_streams)
        _progress(
            f"  (e) {target.name:<14} {open_streams} open: VmRSS {rss_kb / 1024:.0f} MB, "
            f"VmHWM {hwm_kb / 1024:.0f} MB; ok {result.ok} errors {result.errors + result.non_2xx} "
            f"mismatched {result.mismatched}"
        )
