"""Running the gateway: readiness, metrics, draining on SIGTERM, several processes on one port."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import aiopg
from aiohttp.test_utils import TestClient
from fleet import SMALL, WorkerFactory, insert_ready_instance, new_key
from waiting import wait_until

from gateway.hot_metrics import FOLD_S
from gateway.server import run_app, stale_metrics_folders
from inventiv.settings import Settings, settings_to_env

Gateway = Callable[..., Awaitable[TestClient]]
CHAT = "/v1/chat/completions"


async def _wait_ready(base: str, session: aiohttp.ClientSession, timeout_s: float = 20.0) -> None:
    async def ready() -> bool:
        async with session.get(f"{base}/readyz") as resp:
            return resp.status == 200

    await wait_until(ready, timeout_s=timeout_s, what=f"{base}/readyz to answer 200")


async def test_health_readiness_and_metrics(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool
) -> None:
    worker = await start_worker()
    await insert_ready_instance(db_pool, SMALL, "127.0.0.1", worker.port or 0)
    key = await new_key(db_pool)
    client = await start_gateway()
    async with client.get("/healthz") as resp:
        assert resp.status == 200
    async with client.get("/readyz") as resp:
        assert resp.status == 200
    body = {"model": SMALL, "messages": [{"role": "user", "content": "hi"}]}
    async with client.post(
        CHAT, json=body, headers={"Authorization": f"Bearer {key}", "X-Inventiv-Session": "m"}
    ) as resp:
        assert resp.status == 200
    async with client.get("/metrics") as resp:
        text = await resp.text()
    assert f'inventiv_gateway_requests_total{{model="{SMALL}",route="{CHAT}",status="200"}}' in text
    assert 'inventiv_gateway_affinity_total{result="miss"}' in text
    assert "inventiv_gateway_request_duration_seconds_bucket" in text
    assert 'inventiv_gateway_tokens_total{kind="completion"' in text


async def test_sigterm_drains_streams_in_flight(
    start_worker: WorkerFactory, db_pool: aiopg.Pool, gateway_settings: Settings, unused_tcp_port: int
) -> None:
    worker = await start_worker(tokens=20, token_delay_ms=50)
    await insert_ready_instance(db_pool, SMALL, "127.0.0.1", worker.port or 0)
    key = await new_key(db_pool)
    settings = gateway_settings.replace(gateway_port=unused_tcp_port, drain_timeout_s=10.0)
    stop = asyncio.Event()
    server = asyncio.create_task(run_app(settings, stop))
    base = f"http://127.0.0.1:{unused_tcp_port}"
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": SMALL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with aiohttp.ClientSession() as session:
        await _wait_ready(base, session)
        async with session.post(f"{base}{CHAT}", json=body, headers=headers) as stream:
            first = await stream.content.readline()
            assert first.startswith(b"data: ")
            stop.set()  # what SIGTERM does
            await asyncio.sleep(0.1)
            async with session.get(f"{base}/readyz") as resp:
                assert resp.status == 503
            async with session.post(f"{base}{CHAT}", json=body, headers=headers) as refused:
                assert refused.status == 503
                assert (await refused.json())["error"]["code"] == "draining"
            rest = await stream.read()
        # The stream in flight ran to its end.
        assert rest.endswith(b"data: [DONE]\n\n")
        assert rest.count(b"data: {") == 20
    await asyncio.wait_for(server, 10)


async def test_workers_share_the_port_serve_on_uvloop_and_stop_on_sigterm(
    start_worker: WorkerFactory, db_pool: aiopg.Pool, gateway_settings: Settings, unused_tcp_port: int
) -> None:
    worker = await start_worker(tokens=3)
    await insert_ready_instance(db_pool, SMALL, "127.0.0.1", worker.port or 0)
    key = await new_key(db_pool)
    settings = gateway_settings.replace(gateway_port=unused_tcp_port, gateway_workers=2, drain_timeout_s=2.0)
    env = {**os.environ, **settings_to_env(settings), "INVENTIV_LOG_FORMAT": "json"}
    proc = subprocess.Popen([sys.executable, "-m", "inventiv", "gateway"], env=env)
    base = f"http://127.0.0.1:{unused_tcp_port}"
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_ready(base, session)
            # Real processes run on uvloop: the whole proxy path, streaming included, must work there.
            for stream in (False, True):
                body = {"model": SMALL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
                headers = {"Authorization": f"Bearer {key}"}
                async with session.post(f"{base}{CHAT}", json=body, headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
                    assert b"charlie" in await resp.read()
            # Whichever process answers the scrape counts both requests, wherever they were served: each
            # process folds its counts into the shared files every second (gateway/hot_metrics.py).
            served = f'inventiv_gateway_requests_total{{model="{SMALL}",route="{CHAT}",status="200"}} 2.0'
            await asyncio.sleep(FOLD_S * 1.5)
            for _ in range(6):
                async with session.get(f"{base}/metrics", headers={"Connection": "close"}) as resp:
                    assert served in await resp.text()
        children = _children(proc.pid)
        assert len(children) == 2
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        assert not any(_alive(pid) for pid in children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _children(pid: int) -> list[int]:
    """The gateway's worker processes (multiprocessing also starts a resource tracker: not counted)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and b"spawn_main" in _cmdline(int(entry)):
                found.append(int(entry))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_workers_drain_and_exit_when_their_supervisor_is_killed(
    db_pool: aiopg.Pool, gateway_settings: Settings, unused_tcp_port: int, tmp_path: Path
) -> None:
    settings = gateway_settings.replace(gateway_port=unused_tcp_port, gateway_workers=2, drain_timeout_s=1.0)
    # A temporary folder of its own: where the group's metrics folder goes.
    env = {**os.environ, **settings_to_env(settings), "INVENTIV_LOG_FORMAT": "json", "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "inventiv", "gateway"], env=env)
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_ready(f"http://127.0.0.1:{unused_tcp_port}", session)
        children = _children(proc.pid)
        assert len(children) == 2
        proc.kill()  # SIGKILL: the supervisor gets no chance to stop them
        await asyncio.to_thread(proc.wait, 10)
        await wait_until(
            lambda: not any(_alive(pid) for pid in children), timeout_s=10, interval_s=0.1, what="the workers to exit"
        )
        # The killed supervisor could not remove its metrics folder: the next start does.
        assert [name.split("-")[2] for name in _metrics_folders(tmp_path)] == [str(proc.pid)]
        await _start_and_stop(env, unused_tcp_port)
        assert _metrics_folders(tmp_path) == []
    finally:
        for pid in _children(proc.pid):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _metrics_folders(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith("inventiv-metrics-")]


async def _start_and_stop(env: dict[str, str], port: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "inventiv", "gateway"], env=env)
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_ready(f"http://127.0.0.1:{port}", session)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_only_metrics_folders_of_gone_supervisors_are_stale() -> None:
    names = ["inventiv-metrics-100-abc", "inventiv-metrics-200-def", "inventiv-metrics-xyz", "other-300-a"]
    assert stale_metrics_folders(names, lambda pid: pid == 200) == ["inventiv-metrics-100-abc"]
