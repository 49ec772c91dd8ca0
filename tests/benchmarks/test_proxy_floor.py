"""benchmarks.proxy_floor: the floor servers answer what the worker answers, and the cost curve's table."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from waiting import wait_until

from benchmarks.processes import free_port
from benchmarks.proxy_floor import SERVER_KINDS, RateRun, rate_table, table

ANSWER = b'{"id":"x","usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}'


def test_the_table_gives_each_target_in_floors_and_in_vllm_routers() -> None:
    text = table({
        "app-static": [0.06, 0.07, 0.05], "proxy": [0.1, 0.12, 0.11], "gateway": [0.22, 0.2, 0.24],
        "vllm-router": [0.05, 0.055, 0.06], "nginx": [],
    })  # fmt: skip
    lines = text.splitlines()
    assert lines[2] == "| app-static | 0.060 | 0.060 / 0.070 / 0.050 | 0.55x | 1.09x |"
    assert lines[3].startswith("| proxy | 0.110 |") and lines[3].endswith("| 1.00x | 2.00x |")
    assert lines[4].startswith("| gateway | 0.220 |") and lines[4].endswith("| 2.00x | 4.00x |")
    assert lines[5].startswith("| vllm-router | 0.055 |") and lines[5].endswith("| 0.50x | 1.00x |")
    assert len(lines) == 6, "a target with no run has no row"
    assert table({"gateway": [0.2]}).splitlines()[2].endswith("| — | — |"), "no floor, no router: no ratio"


def test_the_rate_table_gives_the_latency_each_target_adds_over_direct_run_by_run() -> None:
    text = rate_table({
        "direct": [RateRun(None, 0.8, 2.0), RateRun(None, 0.6, 1.5), RateRun(None, 0.9, 1.9)],
        "proxy": [RateRun(0.35, 0.9, 2.2), RateRun(0.30, 0.7, 1.4), RateRun(0.40, 1.2, 2.1)],
        "gateway": [RateRun(0.7, 1.3, 4.0)],
    }, 200.0)  # fmt: skip
    lines = text.splitlines()
    assert "at 200 req/s" in lines[0]
    assert lines[2] == "| direct | — | — | — | 0.80 2.00 / 0.60 1.50 / 0.90 1.90 |"
    # Added p50 of each run: +0.1, +0.1, +0.3; p99: +0.2, -0.1, +0.2.
    assert lines[3] == "| proxy | 0.350 | +0.10 | +0.20 | 0.90 2.20 / 0.70 1.40 / 1.20 2.10 |"
    assert lines[4] == "| gateway | 0.700 | — | — | 1.30 4.00 |", "runs not side by side with direct: no difference"
    peers = rate_table({"direct": [RateRun(None, 0.8, 2.0)], "vllm-router": [RateRun(0.3, 1.1, 2.5)]}, 200.0)
    assert peers.splitlines()[3] == "| vllm-router | 0.300 | +0.30 | +0.50 | 1.10 2.50 |", "peers have rows too"


async def test_each_floor_server_answers_the_workers_bytes(aiohttp_server: Any, tmp_path: Path) -> None:
    async def worker(request: web.Request) -> web.Response:
        assert await request.read() == b'{"model":"m"}'
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", worker)
    upstream = await aiohttp_server(app)
    body_file = tmp_path / "answer.json"
    body_file.write_bytes(ANSWER)
    for kind in SERVER_KINDS:
        port = free_port()
        argv = [sys.executable, "-m", "benchmarks.proxy_floor", "serve", kind, str(port), str(upstream.port),
                str(body_file)]  # fmt: skip
        proc = subprocess.Popen(argv, cwd=Path(__file__).parents[2])
        try:
            assert await wait_until(lambda p=port: _answer(p), timeout_s=20, what=f"the {kind} server") == ANSWER
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 10)


async def _answer(port: int) -> bytes | None:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    async with aiohttp.ClientSession() as session, session.post(url, data=b'{"model":"m"}') as resp:
        return await resp.read() if resp.status == 200 else None
