"""CPU time the gateway process spends per `/v1/chat/completions` request, non-streaming and streaming.

    python -m benchmarks.v1_cpu_per_request [--requests N] [--connections C]

Starts the benchmark stack (benchmarks/stack.py: services, one fast mock worker, one gateway process),
warms it up, then sends N requests over C keep-alive connections and divides the gateway's CPU seconds
(user + system, from /proc) by N. Run it on two checkouts to see what a change costs the data plane.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import uvloop

from benchmarks.loadgen import Connection, build_request
from benchmarks.procfs import tree_cpu_seconds
from benchmarks.stack import WorkerSpec, chat_body, running_stack

# Enough requests that the per-request figure settles to a few percent on a quiet machine.
DEFAULT_REQUESTS = 4000
# A few connections in flight, as a small client pool sends them.
DEFAULT_CONNECTIONS = 8
_TIMEOUT_S = 30.0


async def _send_all(conns: list[Connection], request: bytes, total: int) -> None:
    per_conn = total // len(conns)

    async def loop(conn: Connection) -> None:
        for _ in range(per_conn):
            response = await conn.send(request, _TIMEOUT_S)
            assert response.status == 200, response.status

    await asyncio.gather(*(loop(c) for c in conns))


async def measure(requests: int, connections: int) -> dict[str, float]:
    spec = WorkerSpec("fast", "Qwen/Qwen2.5-0.5B-Instruct", 0.0)
    with tempfile.TemporaryDirectory(prefix="inventiv-v1-cpu-") as run_dir:
        async with running_stack(Path(run_dir), (spec,), {}, None) as stack:
            endpoint, pid = stack.gateway_endpoint, stack.gateway.pid
            headers = {"Authorization": f"Bearer {stack.api_key}"}
            conns = [await Connection.open(endpoint) for _ in range(connections)]
            figures = {}
            for name, stream in (("json", False), ("stream", True)):
                body = chat_body(spec.model, stream=stream, include_usage=stream)
                request = build_request("POST", endpoint, "/v1/chat/completions", body, headers)
                await _send_all(conns, request, requests // 4)  # warm-up: caches, pools, JIT-free but lazy imports
                before = tree_cpu_seconds(pid)
                await _send_all(conns, request, requests)
                figures[name] = (tree_cpu_seconds(pid) - before) / requests * 1e6
            for conn in conns:
                conn.close()
            return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.v1_cpu_per_request", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    args = parser.parse_args()
    figures = uvloop.run(measure(args.requests, args.connections))
    for name, micros in figures.items():
        print(f"{name}: {micros:.0f} µs of gateway CPU per request")


if __name__ == "__main__":
    main()
