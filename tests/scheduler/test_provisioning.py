"""Provisioning passes against the in-memory cloud and a real (in-process) mock worker."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from memory_provider import Crash, MemoryProvider, serve_worker

from inventiv.worker_secrets import worker_secrets
from providers.base import GB, NotReady, OutOfStock, QuotaExceeded, ServerState, TransientError
from scheduler.driver import Driver

MODEL_7B = "Qwen/Qwen2.5-7B-Instruct"


@pytest.fixture
async def provider() -> AsyncIterator[MemoryProvider]:
    async with serve_worker(MODEL_7B) as address:
        yield MemoryProvider("mock", polls_to_running=2, worker_address=address)


async def test_a_7b_instance_becomes_ready_with_boot_and_200_gb_data_volume(
    make_instance: Any, drive: Any, db: Any, provider: MemoryProvider, fast_settings: Any
) -> None:
    instance_id = await make_instance()

    row = await drive(instance_id, "ready")

    assert row["worker_status"] == "ready" and row["worker_model_id"] == MODEL_7B
    assert row["ip_address"] == "127.0.0.1" and row["worker_port"] == provider.worker_address[1]  # type: ignore[index]
    assert row["worker_last_heartbeat_at"] is not None and row["ready_at"] is not None
    assert row["data_volume_gb"] == 200
    assert await db.storage_sizes_gb(instance_id) == [20, 200]
    (server,) = provider.servers.values()
    assert server.name == f"inventiv-{instance_id[:8]}"
    assert server.tags == ("inventiv", f"instance={instance_id}")
    # The server got the instance's secret, the one the gateway and the health probes present.
    assert server.worker_secret == worker_secrets(fast_settings).for_instance(instance_id)
    assert server.engine == "vllm" and row["create_requested_at"] is not None
    boot, data = sorted(provider.volumes.values(), key=lambda v: v.slot or "")
    assert boot.slot == "0" and boot.tags == server.tags, "the boot volume carries our tags"
    assert data.size_bytes == 200 * GB and data.server_id == server.id and data.tags == server.tags
    steps = await db.actions(instance_id)
    assert [a["action_type"] for a in steps] == [
        "EXECUTE_CREATE", "PROVIDER_CREATE", "DISCOVER_VOLUMES", "PROVIDER_CREATE_VOLUME",
        "PROVIDER_ATTACH_VOLUME", "PROVIDER_START", "PROVIDER_ADDRESS", "HEALTH_CHECK",
    ]  # fmt: skip
    assert all(a["status"] == "success" and a["duration_ms"] is not None for a in steps)
    volumes = await db.volumes(instance_id)
    assert [(v["is_boot"], v["slot"], v["delete_on_terminate"]) for v in volumes] == [
        (True, "0", True), (False, None, True),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("asked_gb", "expected_sizes"),
    [(0, [20]), (500, [20, 500]), (None, [20, 200])],
)
async def test_data_volume_size_as_asked(
    make_instance: Any, drive: Any, db: Any, asked_gb: int | None, expected_sizes: list[int]
) -> None:
    instance_id = await make_instance(data_volume_gb=asked_gb)
    await drive(instance_id, "ready")
    assert await db.storage_sizes_gb(instance_id) == expected_sizes


async def test_worker_data_volume_gb_forces_every_instance(make_instance: Any, drive: Any, db: Any, rt: Any) -> None:
    rt.settings = rt.settings.replace(worker_data_volume_gb=50)
    instance_id = await make_instance(data_volume_gb=500)
    await drive(instance_id, "ready")
    assert await db.storage_sizes_gb(instance_id) == [20, 50]


async def test_model_and_provider_defaults_size_the_data_volume(
    make_instance: Any, drive: Any, db: Any, db_pool: Any
) -> None:
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE provider_settings SET worker_data_volume_gb_default = 80 "
            "WHERE provider_id = (SELECT id FROM providers WHERE code = 'mock')"
        )
    by_provider = await make_instance()
    await drive(by_provider, "ready")
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("UPDATE models SET data_volume_gb = 0 WHERE hf_repo_id = %s", (MODEL_7B,))
    by_model = await make_instance()
    await drive(by_model, "ready")
    assert await db.storage_sizes_gb(by_provider) == [20, 80]
    assert await db.storage_sizes_gb(by_model) == [20]


async def test_crash_between_create_and_record_adopts_the_server(
    make_instance: Any, drive: Any, db: Any, run_pass: Any, expire_claim: Any, provider: MemoryProvider,
    fast_settings: Any,
) -> None:  # fmt: skip
    instance_id = await make_instance()
    provider.crash_after("create_server")
    with pytest.raises(Crash):
        await run_pass(instance_id)
    assert len(provider.servers) == 1
    assert (await db.instance(instance_id))["provider_instance_id"] is None
    await expire_claim(instance_id)

    row = await drive(instance_id, "ready")

    assert provider.count("create_server") == 1 and len(provider.servers) == 1
    assert row["provider_instance_id"] == next(iter(provider.servers))
    creates = [a for a in await db.actions(instance_id) if a["action_type"] == "PROVIDER_CREATE"]
    assert [(a["status"], a["error_code"]) for a in creates] == [("failed", "INTERRUPTED"), ("success", None)]
    assert creates[-1]["metadata"]["adopted"] is True
    # The adopted server was created with the instance's secret.
    server = next(iter(provider.servers.values()))
    assert server.worker_secret == worker_secrets(fast_settings).for_instance(instance_id)


async def test_crash_after_creating_the_data_volume_adopts_it(
    make_instance: Any, drive: Any, run_pass: Any, expire_claim: Any, provider: MemoryProvider, db: Any
) -> None:
    instance_id = await make_instance()
    provider.crash_after("create_volume")
    with pytest.raises(Crash):
        for _ in range(5):
            await run_pass(instance_id)
    await expire_claim(instance_id)

    await drive(instance_id, "ready")

    assert provider.count("create_volume") == 1
    assert await db.storage_sizes_gb(instance_id) == [20, 200]


@pytest.mark.parametrize(
    ("method", "error", "code"),
    [
        ("power_on", OutOfStock("no L40S left"), "PROVIDER_OUT_OF_STOCK"),
        ("create_server", QuotaExceeded("Quota exceeded for this resource."), "PROVIDER_QUOTA_EXCEEDED"),
        ("create_volume", QuotaExceeded("volume quota"), "PROVIDER_QUOTA_EXCEEDED"),
    ],
)
async def test_a_hard_cloud_error_fails_the_instance_and_cleans_up(
    make_instance: Any, drive: Any, db: Any, provider: MemoryProvider, method: str, error: Exception, code: str
) -> None:
    instance_id = await make_instance()
    provider.fail(method, error)

    row = await drive(instance_id, "failed")

    assert row["error_code"] == code and row["error_message"] == error.args[0]
    assert row["deleted_at"] is not None
    assert provider.servers == {} and provider.volumes == {}, "nothing created is left behind"
    assert all(v["deleted_at"] is not None for v in await db.volumes(instance_id))
    failed = [a for a in await db.actions(instance_id) if a["status"] == "failed"]
    assert [a["error_code"] for a in failed] == [code, code]  # the step, then INSTANCE_FAILED
    cleanup = [a for a in await db.actions(instance_id) if a["action_type"] == "EXECUTE_CLEANUP"]
    assert [a["status"] for a in cleanup] == ["success"]


async def test_transient_errors_are_retried_until_ready(
    make_instance: Any, drive: Any, db: Any, provider: MemoryProvider
) -> None:
    instance_id = await make_instance()
    provider.fail("create_server", TransientError("503 from the cloud"), times=2)
    provider.fail("attach_volume", TransientError("transient_state"), times=1)

    row = await drive(instance_id, "ready")

    assert row["attempts"] == 0 and row["error_code"] is None
    assert provider.count("create_server") == 3 and len(provider.servers) == 1
    failed = [a["action_type"] for a in await db.actions(instance_id) if a["status"] == "failed"]
    assert failed == ["PROVIDER_CREATE", "PROVIDER_CREATE", "PROVIDER_ATTACH_VOLUME"]


async def test_an_instance_past_its_deadline_fails_and_is_cleaned_up(
    make_instance: Any, drive: Any, db: Any, driver: Driver, provider: MemoryProvider, db_pool: Any
) -> None:
    provider.worker_address = ("127.0.0.1", _closed_port())  # the server runs, its worker never answers
    instance_id = await make_instance(deadline_s=600)
    await drive(instance_id, "booting")
    for _ in range(5):
        await driver.run_due()
        await asyncio.sleep(0.02)
    assert await db.action_types(instance_id) == [
        "EXECUTE_CREATE", "PROVIDER_CREATE", "DISCOVER_VOLUMES", "PROVIDER_CREATE_VOLUME",
        "PROVIDER_ATTACH_VOLUME", "PROVIDER_START", "PROVIDER_ADDRESS", "HEALTH_CHECK",
    ], "health checks keep one row open"  # fmt: skip
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE instances SET provisioning_deadline_at = now() - interval '1 second' WHERE id = %s",
            (instance_id,),
        )

    row = await drive(instance_id, "failed")

    assert row["error_code"] == "PROVISIONING_TIMEOUT"
    assert provider.servers == {} and provider.volumes == {}
    health = [a for a in await db.actions(instance_id) if a["action_type"] == "HEALTH_CHECK"]
    assert [(a["status"], a["error_code"]) for a in health] == [("failed", "PROVISIONING_TIMEOUT")]


async def test_terminating_during_provisioning_releases_what_exists(
    make_instance: Any, drive: Any, db: Any, driver: Driver, provider: MemoryProvider, terminate: Any
) -> None:
    instance_id = await make_instance()
    await drive(instance_id, "booting")
    await terminate(instance_id)

    row = await drive(instance_id, "terminated")

    assert provider.servers == {} and provider.volumes == {}
    assert row["deleted_at"] is not None and row["terminated_at"] is not None


async def test_a_server_that_vanishes_while_booting_fails_the_instance(
    make_instance: Any, drive: Any, provider: MemoryProvider
) -> None:
    provider.polls_to_running = 100
    instance_id = await make_instance()
    await drive(instance_id, "booting")
    provider.vanish(next(iter(provider.servers)))

    row = await drive(instance_id, "failed")

    assert row["error_code"] == "PROVIDER_SERVER_GONE"
    assert provider.volumes == {}, "its volumes left behind are deleted"


async def test_inactive_catalog_entries_fail_validation(
    make_instance: Any, drive: Any, db: Any, db_pool: Any, provider: MemoryProvider
) -> None:
    instance_id = await make_instance()
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("UPDATE models SET is_active = false WHERE hf_repo_id = %s", (MODEL_7B,))

    row = await drive(instance_id, "failed")

    assert row["error_code"] == "MODEL_INACTIVE"
    assert provider.count("create_server") == 0
    assert (await db.actions(instance_id))[0]["action_type"] == "EXECUTE_CREATE"


async def test_running_server_state_is_used_for_address(
    make_instance: Any, drive: Any, provider: MemoryProvider
) -> None:
    instance_id = await make_instance()
    row = await drive(instance_id, "ready")
    server = provider.servers[row["provider_instance_id"]]
    assert server.state is ServerState.RUNNING


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_data_volume_not_ready_for_its_attach_is_waited_for_not_failed(
    make_instance: Any, drive: Any, db: Any, provider: MemoryProvider
) -> None:
    instance_id = await make_instance()
    provider.fail("attach_volume", NotReady("volume is creating"), times=2)

    row = await drive(instance_id, "ready")

    assert (row["attempts"], row["error_code"]) == (0, None)
    assert provider.count("attach_volume") == 3
    assert await db.storage_sizes_gb(instance_id) == [20, 200]
