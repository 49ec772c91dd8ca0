"""The worker agent: what it measures, and its heartbeats driving the worker's state through a real gateway."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fleet import SMALL, insert_ready_instance, set_instance
from memory_provider import serve_worker
from waiting import wait_until

from gateway.app import create_app
from inventiv.settings import Settings
from inventiv.worker_secrets import worker_secrets
from scheduler.health import check_ready_workers
from scheduler.runtime import ProviderSet, Runtime
from worker.agent import Agent, AgentConfig, AgentConfigError, parse_nvidia_smi, worker_status
from worker.probe import Probe

NVIDIA_SMI = """\
0, 87, 30721, 46068
1, 93, 30000, 46068
"""
# A stand-in for nvidia-smi: answers the agent's query the way the real one does (csv, no header, no units).
FAKE_NVIDIA_SMI = f"""#!/bin/sh
case "$*" in
  *--query-gpu=index,utilization.gpu,memory.used,memory.total*--format=csv,noheader,nounits*)
    printf '{NVIDIA_SMI.replace(chr(10), chr(92) + "n")}' ;;
  *) echo "unexpected arguments: $*" >&2; exit 2 ;;
esac
"""


@pytest.mark.parametrize(
    ("csv", "expected"),
    [
        (NVIDIA_SMI, {"gpu_count": 2, "gpu_utilization_pct": 90, "gpu_memory_used_mib": 60721,
                      "gpu_memory_total_mib": 92136}),
        # MIG and some models print [N/A] for utilisation: unknown, not zero.
        ("0, [N/A], 100, 200\n", {"gpu_count": 1, "gpu_utilization_pct": None, "gpu_memory_used_mib": 100,
                                  "gpu_memory_total_mib": 200}),
        ("0, [Not Supported], [N/A], [N/A]\n", {"gpu_count": 1, "gpu_utilization_pct": None,
                                               "gpu_memory_used_mib": None, "gpu_memory_total_mib": None}),
        ("", {"gpu_count": 0, "gpu_utilization_pct": None, "gpu_memory_used_mib": None,
              "gpu_memory_total_mib": None}),
    ],
)  # fmt: skip
def test_parse_nvidia_smi(csv: str, expected: dict[str, Any]) -> None:
    assert parse_nvidia_smi(csv) == expected


@pytest.mark.parametrize(
    ("probe", "status"),
    [(Probe(True, (SMALL,)), "ready"), (Probe(True, ("other",)), "starting"), (Probe(True, ()), "starting"),
     (Probe(False, error="refused"), "starting"), (Probe(False, refused=True), "unhealthy")],
)
def test_worker_status(probe: Probe, status: str) -> None:
    assert worker_status(probe, SMALL) == status


ENV = {"INVENTIV_AGENT_GATEWAY_URL": "https://gw.example.com/", "INVENTIV_AGENT_SECRET": "s" * 43,
       "INVENTIV_AGENT_INSTANCE_ID": "11111111-2222-3333-4444-555555555555"}  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"INVENTIV_AGENT_SECRET": ""}, "INVENTIV_AGENT_SECRET must be set"),
     ({"INVENTIV_AGENT_GATEWAY_URL": "gw.example.com"}, "INVENTIV_AGENT_GATEWAY_URL must be an http"),
     ({"INVENTIV_AGENT_INSTANCE_ID": "nope"}, "INVENTIV_AGENT_INSTANCE_ID"),
     ({"INVENTIV_AGENT_ENGINE": "tgi"}, "unknown engine 'tgi'"),
     ({"INVENTIV_AGENT_INTERVAL_S": "0"}, "must be positive")],
)
def test_bad_agent_settings_are_named(changes: dict[str, str], message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        AgentConfig.from_env({**ENV, **changes})


def test_agent_settings_are_read_and_the_secret_stays_out_of_the_repr() -> None:
    config = AgentConfig.from_env({**ENV, "INVENTIV_AGENT_ENGINE": "llama_cpp", "INVENTIV_AGENT_INTERVAL_S": "2.5"})
    assert (config.gateway_url, config.engine, config.interval_s) == ("https://gw.example.com", "llama_cpp", 2.5)
    assert "s" * 43 not in repr(config)


# -- against a real gateway ---------------------------------------------------------------------------


@pytest.fixture
async def gateway(aiohttp_server: Any, settings: Settings, db_pool: aiopg.Pool) -> TestServer:
    app: web.Application = create_app(settings)
    server: TestServer = await aiohttp_server(app)
    return server


@pytest.fixture
def nvidia_smi(tmp_path: Path) -> str:
    path = tmp_path / "nvidia-smi"
    path.write_text(FAKE_NVIDIA_SMI)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
async def worker_instance(db_pool: aiopg.Pool, settings: Settings) -> AsyncIterator[tuple[str, int]]:
    """A ready instance whose mock worker holds its secret and reports 3 requests waiting."""
    instance_id = await insert_ready_instance(db_pool, SMALL, "127.0.0.1", 1, heartbeat_age_s=60)
    secret = worker_secrets(settings).for_instance(instance_id)
    async with serve_worker(SMALL, api_key=secret, num_waiting=3) as (_, port):
        await set_instance(db_pool, instance_id, worker_port=port)
        yield instance_id, port


def config_for(gateway: TestServer, instance_id: str, port: int, secret: str, **changes: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "gateway_url": str(gateway.make_url("")).rstrip("/"), "instance_id": instance_id, "secret": secret,
        "engine_url": f"http://127.0.0.1:{port}", "model": SMALL, **changes,
    }  # fmt: skip
    return AgentConfig(**values)


async def instance(db_pool: aiopg.Pool, instance_id: str) -> dict[str, Any]:
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "SELECT worker_status, worker_queue_depth, worker_model_id, worker_telemetry, agent_heartbeat_at, "
            "extract(epoch FROM now() - worker_last_heartbeat_at) AS heartbeat_age FROM instances WHERE id = %s",
            (instance_id,),
        )
        assert cur.description is not None
        names = [c.name for c in cur.description]
        row = await cur.fetchone()
    return dict(zip(names, row, strict=True))


async def test_a_heartbeat_carries_the_engine_the_gpus_and_the_disk_to_the_instance(
    gateway: TestServer, worker_instance: tuple[str, int], settings: Settings, db_pool: aiopg.Pool,
    nvidia_smi: str, tmp_path: Path,
) -> None:  # fmt: skip
    instance_id, port = worker_instance
    secret = worker_secrets(settings).for_instance(instance_id)
    config = config_for(gateway, instance_id, port, secret, nvidia_smi=nvidia_smi, data_dir=str(tmp_path))
    async with aiohttp.ClientSession() as http:
        sent = await Agent(config, http).beat()

    assert sent["worker_status"] == "ready" and sent["queue_depth"] == 3
    row = await instance(db_pool, instance_id)
    assert (row["worker_status"], row["worker_queue_depth"], row["worker_model_id"]) == ("ready", 3, SMALL)
    assert row["agent_heartbeat_at"] is not None and row["heartbeat_age"] < 5, "the heartbeat is fresh again"
    telemetry = row["worker_telemetry"]
    assert telemetry["gpu_count"] == 2 and telemetry["gpu_utilization_pct"] == 90
    assert telemetry["gpu_memory_total_mib"] == 92136
    assert 0 < telemetry["disk_used_bytes"] < telemetry["disk_total_bytes"]


async def test_without_nvidia_smi_the_agent_reports_the_rest(
    gateway: TestServer, worker_instance: tuple[str, int], settings: Settings, db_pool: aiopg.Pool, tmp_path: Path
) -> None:
    instance_id, port = worker_instance
    secret = worker_secrets(settings).for_instance(instance_id)
    config = config_for(gateway, instance_id, port, secret, nvidia_smi=str(tmp_path / "absent"),
                        data_dir=str(tmp_path))  # fmt: skip
    async with aiohttp.ClientSession() as http:
        sent = await Agent(config, http).beat()
    assert "gpu_count" not in sent and sent["disk_total_bytes"] > 0
    assert (await instance(db_pool, instance_id))["worker_status"] == "ready"


async def test_a_wrong_secret_changes_nothing(
    gateway: TestServer, worker_instance: tuple[str, int], db_pool: aiopg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    instance_id, port = worker_instance
    config = config_for(gateway, instance_id, port, "not-the-secret-of-this-instance")
    async with aiohttp.ClientSession() as http:
        agent = Agent(config, http)
        sent = await agent.beat()
    # The engine refused it too: the agent says so, and the gateway refuses the heartbeat.
    assert sent["worker_status"] == "unhealthy" and agent.sent == 0
    assert "heartbeat refused" in caplog.text
    row = await instance(db_pool, instance_id)
    assert row["agent_heartbeat_at"] is None and row["worker_status"] == "ready"


async def test_the_scheduler_polls_only_workers_whose_agent_went_quiet(
    gateway: TestServer, worker_instance: tuple[str, int], settings: Settings, db_pool: aiopg.Pool, redis: Any,
) -> None:  # fmt: skip
    instance_id, port = worker_instance
    secret = worker_secrets(settings).for_instance(instance_id)
    rt = Runtime(settings, db_pool, redis, ProviderSet(settings), aiohttp.ClientSession())
    try:
        assert await check_ready_workers(rt) == 1, "no agent yet: polled"
        async with aiohttp.ClientSession() as http:
            await Agent(config_for(gateway, instance_id, port, secret), http).beat()
        assert await check_ready_workers(rt) == 0, "a fresh heartbeat: left to its agent"
        quiet = 3 * settings.agent_interval_s + 1
        await set_instance(db_pool, instance_id, agent_heartbeat_at=datetime.now(UTC) - timedelta(seconds=quiet))
        assert await check_ready_workers(rt) == 1, "three heartbeats missed: polled again"
    finally:
        await rt.close()


async def until_ready(db_pool: aiopg.Pool, instance_id: str) -> dict[str, Any]:
    async def ready() -> dict[str, Any]:
        row = await instance(db_pool, instance_id)
        assert row["worker_status"] == "ready", row
        return row

    return await wait_until(ready, timeout_s=20, interval_s=0.1, what="the agent to make the worker ready")


async def test_the_agent_command_drives_the_worker_state(
    gateway: TestServer, db_pool: aiopg.Pool, settings: Settings, nvidia_smi: str, tmp_path: Path
) -> None:
    instance_id = await insert_ready_instance(db_pool, SMALL, "127.0.0.1", 1, worker_status="starting")
    secret = worker_secrets(settings).for_instance(instance_id)
    async with serve_worker(SMALL, api_key=secret, num_waiting=5) as (_, port):
        env = {
            **os.environ, "PATH": f"{Path(nvidia_smi).parent}:{os.environ['PATH']}",
            "INVENTIV_AGENT_GATEWAY_URL": str(gateway.make_url("")), "INVENTIV_AGENT_INSTANCE_ID": instance_id,
            "INVENTIV_AGENT_SECRET": secret, "INVENTIV_AGENT_ENGINE_URL": f"http://127.0.0.1:{port}",
            "INVENTIV_AGENT_MODEL": SMALL, "INVENTIV_AGENT_DATA_DIR": str(tmp_path), "INVENTIV_AGENT_INTERVAL_S": "0.2",
        }  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "inventiv", "agent", env=env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            row = await until_ready(db_pool, instance_id)
        finally:
            if proc.returncode is None:
                proc.terminate()
            _, err = await proc.communicate()
    assert row["worker_queue_depth"] == 5 and row["worker_telemetry"]["gpu_count"] == 2
    assert secret.encode() not in err, "the agent never logs its secret"
