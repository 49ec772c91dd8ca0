"""The cost curve of a proxy on the gateway's stack: what uvloop and aiohttp cost before any gateway
feature, measured side by side with the gateway, one process on one core each.

    python -m benchmarks.proxy_floor [--duration S] [--reps N] [--rate R] [--rate-duration S]
                                     [--peers sglang-router,vllm-router,nginx | --no-peer]

Targets, each alone on CPU 1 (the mock worker, the load driver and this orchestrator on CPU 0), under
the same closed loop of 64 connections sending the benchmark's non-streaming chat request, then at a
fixed offered rate (`--rate`, 200 req/s: the benchmark's (b)) beside the worker itself (`direct`):
- `raw-static`: an `asyncio.Protocol` on uvloop answering the worker's bytes, with httptools (llhttp)
  parsing the requests: the floor of any Python server on this loop;
- `raw-proxy`: the same protocol relaying to the mock worker through the gateway's `UpstreamPool`: the
  floor of a Python proxy here, with no aiohttp server in the way;
- `app-static`: an aiohttp `web.Application` answering the worker's bytes itself (router, middleware,
  request and response objects: aiohttp's own cost with nothing behind it);
- `server-static`: aiohttp's low-level `web.Server` doing the same;
- `proxy`: the low-level server relaying to the mock worker through the gateway's `UpstreamPool`,
  nothing else (no key, no model, no metering, no metrics, no log): the floor of a proxy here;
- `gateway`: the gateway with every feature on (access log on, no session header), as plain Python;
- `gateway-compiled`: the same, its request path compiled with mypyc as a production install builds it
  (setup.py's `INVENTIV_MYPYC=1`, benchmarks/compiled.py);
- the peers of `make bench` (`--peers`, by default all of them: sglang-router, vllm-router, and nginx as
  a reverse proxy), run as it runs them, in front of the same worker: the curve places the targets the
  gateway is judged against among the floors, measured in the same run.
Each CPU figure is the target's CPU time (its /proc utime + stime) over the load and the drain, divided
by the answers that came back whole and byte-identical to the worker's; at the fixed rate, also the
latency it adds over `direct` (p50 and p99 of each run less those of the `direct` run beside it).

The two `raw-` servers parse only what a load driver sends (requests with a body of known length, on
keep-alive connections): they measure what a server of that shape costs, and serve nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import compiled, peer, procfs, scenarios, stats
from benchmarks.integrity import ExpectedBody
from benchmarks.loadgen import Endpoint, LoadResult, build_request, closed_loop, fetch, open_loop
from benchmarks.processes import LOOPBACK, Started, free_port, start, stop, wait_ready
from benchmarks.services import bench_services, prepare_database
from benchmarks.stack import LOAD_CPU, PROXY_CPU, gateway_env, start_gateway, start_peer, start_worker, worker_specs

if TYPE_CHECKING:
    from gateway.upstream import UpstreamPool

RAW_KINDS = ("raw-static", "raw-proxy")
STATIC_KINDS = ("app-static", "server-static")
PROXY = "proxy"
GATEWAY = "gateway"
GATEWAY_COMPILED = "gateway-compiled"
DIRECT = "direct"
SERVER_KINDS = (*RAW_KINDS, *STATIC_KINDS, PROXY)
CONCURRENCY = 64
RATE = 200.0


# -- the servers (run as `python -m benchmarks.proxy_floor serve KIND PORT UPSTREAM_PORT BODY_FILE`) --------


def serve(kind: str, port: int, upstream_port: int, body_file: Path) -> None:
    import uvloop
    from aiohttp import web

    from gateway.upstream import UpstreamPool, build_head

    answer = body_file.read_bytes()
    address = f"{LOOPBACK}:{upstream_port}".encode()

    async def static(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        return web.Response(body=answer, content_type="application/json")

    async def main() -> None:
        pool = UpstreamPool(5.0)

        async def relay(request: web.BaseRequest) -> web.StreamResponse:
            body = await request.read()
            head = build_head(b"POST", request.raw_path.encode(), address, len(body))
            up = await pool.request(LOOPBACK, upstream_port, head, body, first_byte_timeout=30.0)
            try:
                data = await up.read_all()
            finally:
                up.close()
            return web.Response(status=up.status, body=data, content_type="application/json")

        if kind in RAW_KINDS:
            loop = asyncio.get_running_loop()
            relay_to = pool if kind == "raw-proxy" else None
            await loop.create_server(lambda: RawServer(answer, relay_to, address, upstream_port), LOOPBACK, port)
            await asyncio.Event().wait()
        runner: web.BaseRunner
        if kind == "app-static":
            app = web.Application()
            app.router.add_post(scenarios.CHAT, static)
            runner = web.AppRunner(app, access_log=None)
        else:
            handler = static if kind == "server-static" else relay
            runner = web.ServerRunner(web.Server(handler, access_log=None))
        await runner.setup()
        await web.TCPSite(runner, LOOPBACK, port, reuse_port=True).start()
        await asyncio.Event().wait()

    uvloop.run(main())


class RawServer(asyncio.Protocol):
    """One keep-alive connection of the `raw-` servers: httptools parses, each whole request is answered
    with `answer`, or relayed to the upstream through `pool` and answered with the upstream's body."""

    def __init__(self, answer: bytes, pool: UpstreamPool | None, address: bytes, upstream_port: int) -> None:
        import httptools

        self._parser = httptools.HttpRequestParser(self)
        self._answer = answer
        self._pool = pool
        self._address = address
        self._upstream_port = upstream_port
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        # A connection's requests are answered in order: the relay of each chains on the one before.
        self._last: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body, self._body, url, self._url = b"".join(self._body), [], self._url, b""
        if self._pool is None:
            self._reply(200, self._answer)
        else:
            self._last = asyncio.ensure_future(self._relay(self._pool, url, body, self._last))

    async def _relay(self, pool: UpstreamPool, url: bytes, body: bytes, before: asyncio.Future[None] | None) -> None:
        from gateway.upstream import build_head

        if before is not None:
            await before
        head = build_head(b"POST", url, self._address, len(body))
        up = await pool.request(LOOPBACK, self._upstream_port, head, body, first_byte_timeout=30.0)
        try:
            data = await up.read_all()
        finally:
            up.close()
        self._reply(up.status, data)

    def _reply(self, status: int, body: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                  % (status, len(body), body))  # fmt: skip


# -- the measurement ---------------------------------------------------------------------------------------


@dataclass
class Running:
    name: str
    # None: the worker itself (`direct`), nothing between the driver and it.
    started: Started | None
    endpoint: Endpoint


@dataclass(frozen=True)
class RateRun:
    """One run at the fixed rate: the target's CPU per answer (None for `direct`) and its latencies."""

    cpu_ms: float | None
    p50_ms: float
    p99_ms: float


@dataclass
class Figures:
    # Target -> CPU ms per answer of each closed-loop run.
    cpu: dict[str, list[float]]
    # Target -> each run at the fixed rate, `direct` among them; the n-th runs of all were side by side.
    at_rate: dict[str, list[RateRun]]


async def _start_floor(
    exits: AsyncExitStack, kind: str, worker: Endpoint, body_file: Path, run_dir: Path, chat: bytes
) -> Running:
    endpoint = Endpoint(LOOPBACK, free_port())
    argv = [sys.executable, "-m", "benchmarks.proxy_floor", "serve", kind, str(endpoint.port), str(worker.port),
            str(body_file)]  # fmt: skip
    started = await start(kind, argv, cpu=PROXY_CPU, log_dir=run_dir, cwd=Path.cwd())
    exits.push_async_callback(stop, started)
    await wait_ready(started, endpoint, build_request("POST", endpoint, scenarios.CHAT, chat))
    return Running(kind, started, endpoint)


def _check(target: Running, load: LoadResult) -> None:
    if load.errors or load.mismatched or load.non_2xx or load.skipped or not load.ok:
        raise RuntimeError(f"{target.name}: {load.ok} ok, {load.errors} errors, {load.non_2xx} non-2xx, "
                           f"{load.mismatched} mismatched, {load.skipped} not sent "
                           f"({load.first_error or load.first_mismatch})")  # fmt: skip


async def measure_once(target: Running, request: bytes, expected: ExpectedBody, duration_s: float) -> float:
    """CPU ms per whole, byte-identical answer of one closed-loop run against `target`."""
    assert target.started is not None
    pid = target.started.pid
    await scenarios.settle(pid)
    before = procfs.tree_cpu_seconds(pid)
    load = await closed_loop(target.endpoint, request, expected, concurrency=CONCURRENCY, duration_s=duration_s)
    await scenarios.settle(pid)
    spent = procfs.tree_cpu_seconds(pid) - before
    _check(target, load)
    return 1000 * spent / load.ok


async def measure_at_rate(target: Running, request: bytes, expected: ExpectedBody, rate: float,
                          duration_s: float) -> RateRun:  # fmt: skip
    """One open-loop run at `rate` requests a second: latency percentiles, and CPU per answer."""
    pid = target.started.pid if target.started is not None else None
    if pid is not None:
        await scenarios.settle(pid)
    before = procfs.tree_cpu_seconds(pid) if pid is not None else 0.0
    load = await open_loop(target.endpoint, request, expected, rate=rate, duration_s=duration_s)
    cpu_ms = None
    if pid is not None:
        await scenarios.settle(pid)
        cpu_ms = 1000 * (procfs.tree_cpu_seconds(pid) - before) / load.ok
    _check(target, load)
    p50, p99 = stats.percentile(load.latencies_s, 50), stats.percentile(load.latencies_s, 99)
    assert p50 is not None and p99 is not None
    return RateRun(cpu_ms, 1000 * p50, 1000 * p99)


def table(figures: dict[str, list[float]]) -> str:
    """The cost curve: each target's median CPU per request, and how many floors (`proxy`) and how many
    vllm-routers (the yardstick of make bench's CPU target) it is, in the order measured."""
    medians = {name: statistics.median(values) for name, values in figures.items() if values}
    lines = [
        "| target | CPU ms per request (median) | runs | x proxy floor | x vllm-router |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, median in medians.items():
        runs = " / ".join(f"{v:.3f}" for v in figures[name])
        lines.append(f"| {name} | {median:.3f} | {runs} | {_times(median, medians.get(PROXY))} | "
                     f"{_times(median, medians.get(peer.VLLM_ROUTER.name))} |")  # fmt: skip
    return "\n".join(lines)


def _times(value: float, unit: float | None) -> str:
    return f"{value / unit:.2f}x" if unit else "—"


def rate_table(at_rate: dict[str, list[RateRun]], rate: float) -> str:
    """Each target at the fixed rate: median CPU per request, and the latency it adds over `direct`
    (each run's percentile less that of the `direct` run beside it, the median of those)."""
    direct = at_rate.get(DIRECT, [])
    lines = [
        f"| target | CPU ms per request at {rate:.0f} req/s | added p50 ms | added p99 ms | p50 / p99 ms of each run |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, runs in at_rate.items():
        if not runs:
            continue
        cpus = [r.cpu_ms for r in runs if r.cpu_ms is not None]
        cpu = f"{statistics.median(cpus):.3f}" if cpus else "—"
        if name == DIRECT:
            added50 = added99 = "—"
        else:
            added50 = _added([r.p50_ms for r in runs], [d.p50_ms for d in direct])
            added99 = _added([r.p99_ms for r in runs], [d.p99_ms for d in direct])
        each = " / ".join(f"{r.p50_ms:.2f} {r.p99_ms:.2f}" for r in runs)
        lines.append(f"| {name} | {cpu} | {added50} | {added99} | {each} |")
    return "\n".join(lines)


def _added(values: list[float], direct: list[float]) -> str:
    if not direct or len(direct) != len(values):
        return "—"
    return f"{statistics.median(v - d for v, d in zip(values, direct, strict=True)):+.2f}"


async def run(duration_s: float, reps: int, rate: float, rate_duration_s: float,
              peers: dict[peer.Peer, Path]) -> Figures:  # fmt: skip
    run_dir = Path(tempfile.mkdtemp(prefix="inventiv-proxy-floor-"))
    specs = worker_specs(20.0, 100.0)
    fast = specs[0]
    async with AsyncExitStack() as exits:
        services = await exits.enter_async_context(bench_services(run_dir))
        worker = await start_worker(exits, fast, run_dir)
        api_key, _ = await prepare_database(services.database_url, {fast.model: (LOOPBACK, worker.port)})
        body = scenarios.chat_body(fast.model, stream=False)
        headers = {"Authorization": f"Bearer {api_key}"}
        reference = await fetch(worker, build_request("POST", worker, scenarios.CHAT, body, headers))
        expected = ExpectedBody.from_reference(reference.body)
        body_file = run_dir / "answer.json"
        body_file.write_bytes(reference.body)
        targets = [await _start_floor(exits, kind, worker, body_file, run_dir, body) for kind in SERVER_KINDS]
        env = {**gateway_env(services, run_dir), "INVENTIV_LOG_LEVEL": "INFO", "INVENTIV_LOG_FORMAT": "json"}
        gateway, endpoint = await start_gateway(exits, GATEWAY, env, run_dir, api_key, [fast.model])
        targets.append(Running(GATEWAY, gateway, endpoint))
        compiled_env = {**env, **compiled.env(compiled.build())}
        gateway, endpoint = await start_gateway(exits, GATEWAY_COMPILED, compiled_env, run_dir, api_key, [fast.model])
        targets.append(Running(GATEWAY_COMPILED, gateway, endpoint))
        for each, binary in peers.items():
            started, endpoint = await start_peer(exits, each, binary, fast.role, fast.model, worker, run_dir)
            targets.append(Running(each.name, started, endpoint))
        paced = [Running(DIRECT, None, worker), *targets]
        figures = Figures({t.name: [] for t in targets}, {t.name: [] for t in paced})
        requests = {t.name: build_request("POST", t.endpoint, scenarios.CHAT, body, headers) for t in paced}
        for rep in range(reps):
            for target in targets[rep % len(targets) :] + targets[: rep % len(targets)]:
                figures.cpu[target.name].append(await measure_once(target, requests[target.name], expected, duration_s))
                _progress(f"  rep {rep + 1}/{reps} {target.name:14s} {figures.cpu[target.name][-1]:.4f} ms")
        if rate > 0:
            for rep in range(reps):
                for target in paced[rep % len(paced) :] + paced[: rep % len(paced)]:
                    measured = await measure_at_rate(target, requests[target.name], expected, rate, rate_duration_s)
                    figures.at_rate[target.name].append(measured)
                    _progress(f"  rep {rep + 1}/{reps} {target.name:14s} at {rate:.0f} req/s: p50 {measured.p50_ms:.2f}"
                              f" p99 {measured.p99_ms:.2f} ms, cpu {measured.cpu_ms or 0:.3f} ms")  # fmt: skip
    return figures


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        kind, port, upstream, body_file = args[1:5]
        serve(kind, int(port), int(upstream), Path(body_file))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.proxy_floor", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of load per run (default 6)")
    parser.add_argument("--reps", type=int, default=3, help="runs of each target, interleaved (default 3)")
    parser.add_argument(
        "--rate",
        type=float,
        default=RATE,
        help="offered rate of the fixed-rate runs, req/s (default %(default)s; 0: none)",
    )
    parser.add_argument(
        "--rate-duration", type=float, default=8.0, help="seconds of each fixed-rate run (default %(default)s)"
    )
    parser.add_argument("--peers", default=",".join(peer.PEERS),
                        help="comma-separated peers to place on the curve (default and choices: %(default)s)")
    parser.add_argument("--no-peer", action="store_true", help="the floors and the gateway only")
    options = parser.parse_args(args)
    cpus = os.sched_getaffinity(0)
    if not {LOAD_CPU, PROXY_CPU} <= cpus:
        raise SystemExit(f"the benchmark needs CPUs {LOAD_CPU} and {PROXY_CPU}; this process may use {sorted(cpus)}")
    os.sched_setaffinity(0, {LOAD_CPU})
    peers = {} if options.no_peer else peer.available(options.peers)
    import uvloop

    figures = uvloop.run(run(options.duration, options.reps, options.rate, options.rate_duration, peers))
    print(table(figures.cpu))
    if options.rate > 0:
        print()
        print(rate_table(figures.at_rate, options.rate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
