"""`inventiv up` on the embedded default, as a user runs it: ready, then Ctrl-C stops everything."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import psutil
import pytest
from waiting import wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_up_serves_then_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTIV_")}
    env.update({"INVENTIV_GATEWAY_PORT": str(port), "INVENTIV_GATEWAY_WORKERS": "2",
                "INVENTIV_DATA_DIR": str(tmp_path / "data"), "INVENTIV_LOG_FORMAT": "json"})
    proc = subprocess.Popen([sys.executable, "-m", "inventiv", "up"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        await _wait_ready(port, proc)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert len(descendants) >= 4  # gateway parent + 2 workers + scheduler (+ embedded services)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "admin key for organization 'demo' (shown once): ik_" in out
    await wait_until(
        lambda: not [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
        timeout_s=5,
        what="every process to stop",
    )


async def _wait_ready(port: int, proc: subprocess.Popen[str]) -> None:
    async with aiohttp.ClientSession() as session:

        async def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(proc.communicate()[1])
            async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                return resp.status == 200

        await wait_until(ready, timeout_s=60, interval_s=0.2, what="the gateway to be ready")
