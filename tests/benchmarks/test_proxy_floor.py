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
from benchmarks.proxy_floor import STATIC_KINDS, table

ANSWER = b'{"id":"x","usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}'


def test_the_table_gives_each_target_in_floors() -> None:
    text = table({"app-static": [0.06, 0.07, 0.05], "proxy": [0.1, 0.12, 0.11], "gateway": [0.22, 0.2, 0.24]})
    lines = text.splitlines()
    assert lines[2] == "| app-static | 0.060 | 0.060 / 0.070 / 0.050 | 0.55x |"
    assert lines[3].startswith("| proxy | 0.110 |") and lines[3].endswith("| 1.00x |")
    assert lines[4].startswith("| gateway | 0.220 |") and lines[4].endswith("| 2.00x |")
    assert "| — |" in table({"gateway": [0.2]}), "no floor measured, no ratio"



async def test_each_floor_server_answers_the_workers_bytes(aiohttp_server: Any, tmp_path: Path) -> None:
    async def worker(request: web.Request) -> web.Response:
        assert await request.read() == b'{"model":"m"}'
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", worker)
    upstream = await aiohttp_server(app)
    body_file = tmp_path / "answer.json"
    body_file.write_bytes(ANSWER)
    for kind in (*STATIC_KINDS, "proxy"):
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
