"""The cost curve of a proxy on the gateway's stack: what aiohttp on uvloop costs before any gateway
feature, measured side by side with the gateway, one process on one core each.

    python -m benchmarks.proxy_floor [--duration S] [--reps N]

Targets, each alone on CPU 1 (the mock worker, the load driver and this orchestrator on CPU 0), under
the same closed loop of 64 connections sending the benchmark's non-streaming chat request:
- `app-static`: an aiohttp `web.Application` answering the worker's bytes itself (router, middleware,
  request and response objects: aiohttp's own cost with nothing behind it);
- `server-static`: aiohttp's low-level `web.Server` doing the same;
- `proxy`: the low-level server relaying to the mock worker through the gateway's `UpstreamPool`,
  nothing else (no key, no model, no metering, no metrics, no log): the floor of a proxy here;
- `gateway`: the gateway with every feature on (access log on, no session header).
Each figure is the target's CPU time (its /proc utime + stime) over the load and the drain, divided by
the answers that came back whole and byte-identical to the worker's.
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

from benchmarks import procfs, scenarios
from benchmarks.integrity import ExpectedBody
from benchmarks.loadgen import Endpoint, build_request, closed_loop, fetch
from benchmarks.processes import LOOPBACK, Started, free_port, start, stop, wait_ready
from benchmarks.services import bench_services, prepare_database
from benchmarks.stack import LOAD_CPU, PROXY_CPU, gateway_env, start_gateway, start_worker, worker_specs

STATIC_KINDS = ("app-static", "server-static")
PROXY = "proxy"
GATEWAY = "gateway"
TARGETS = (*STATIC_KINDS, PROXY, GATEWAY)
CONCURRENCY = 64


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


# -- the measurement ---------------------------------------------------------------------------------------


@dataclass
class Running:
    name: str
    started: Started
    endpoint: Endpoint


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


async def measure_once(target: Running, request: bytes, expected: ExpectedBody, duration_s: float) -> float:
    """CPU ms per whole, byte-identical answer of one closed-loop run against `target`."""
    pid = target.started.pid
    await scenarios.settle(pid)
    before = procfs.tree_cpu_seconds(pid)
    load = await closed_loop(target.endpoint, request, expected, concurrency=CONCURRENCY, duration_s=duration_s)
    await scenarios.settle(pid)
    spent = procfs.tree_cpu_seconds(pid) - before
    if load.errors or load.mismatched or load.non_2xx or not load.ok:
        raise RuntimeError(f"{target.name}: {load.ok} ok, {load.errors} errors, {load.non_2xx} non-2xx, "
                           f"{load.mismatched} mismatched ({load.first_error or load.first_mismatch})")  # fmt: skip
    return 1000 * spent / load.ok


def table(figures: dict[str, list[float]]) -> str:
    """The cost curve: each target's median CPU per request, and how many floors (`proxy`) it is."""
    medians = {name: statistics.median(values) for name, values in figures.items() if values}
    floor = medians.get(PROXY)
    lines = ["| target | CPU ms per request (median) | runs | x proxy floor |", "|---|---:|---:|---:|"]
    for name in TARGETS:
        if name not in medians:
            continue
        ratio = f"{medians[name] / floor:.2f}x" if floor else "—"
        runs = " / ".join(f"{v:.3f}" for v in figures[name])
        lines.append(f"| {name} | {medians[name]:.3f} | {runs} | {ratio} |")
    return "\n".join(lines)


async def run(duration_s: float, reps: int) -> dict[str, list[float]]:
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
        targets = [await _start_floor(exits, kind, worker, body_file, run_dir, body) for kind in (*STATIC_KINDS, PROXY)]
        env = {**gateway_env(services, run_dir), "INVENTIV_LOG_LEVEL": "INFO", "INVENTIV_LOG_FORMAT": "json"}
        gateway, endpoint = await start_gateway(exits, GATEWAY, env, run_dir, api_key, [fast.model])
        targets.append(Running(GATEWAY, gateway, endpoint))
        figures: dict[str, list[float]] = {t.name: [] for t in targets}
        for rep in range(reps):
            for target in targets[rep % len(targets):] + targets[:rep % len(targets)]:
                request = build_request("POST", target.endpoint, scenarios.CHAT, body, headers)
                figures[target.name].append(await measure_once(target, request, expected, duration_s))
                print(f"  rep {rep + 1}/{reps} {target.name:14s} {figures[target.name][-1]:.4f} ms",
                      file=sys.stderr, flush=True)  # fmt: skip
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        kind, port, upstream, body_file = args[1:5]
        serve(kind, int(port), int(upstream), Path(body_file))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.proxy_floor", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of load per run (default 6)")
    parser.add_argument("--reps", type=int, default=3, help="runs of each target, interleaved (default 3)")
    options = parser.parse_args(args)
    cpus = os.sched_getaffinity(0)
    if not {LOAD_CPU, PROXY_CPU} <= cpus:
        raise SystemExit(f"the benchmark needs CPUs {LOAD_CPU} and {PROXY_CPU}; this process may use {sorted(cpus)}")
    os.sched_setaffinity(0, {LOAD_CPU})
    import uvloop

    print(table(uvloop.run(run(options.duration, options.reps))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
