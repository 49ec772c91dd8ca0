"""Release passes: terminate what an instance holds, delete or keep its volumes, even after crashes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from memory_provider import Crash, MemoryProvider, serve_worker

from providers.base import OutOfStock, ServerState, TransientError
from scheduler.driver import Driver


@pytest.fixture
async def provider() -> AsyncIterator[MemoryProvider]:
    async with serve_worker("Qwen/Qwen2.5-7B-Instruct") as address:
        yield MemoryProvider("mock", polls_to_gone=2, worker_address=address)


async def spin(driver: Driver, passes: int) -> None:
    for _ in range(passes):
        await driver.run_due()
        await asyncio.sleep(0.02)


async def ready_instance(make_instance: Any, drive: Any, **kw: Any) -> str:
    instance_id: str = await make_instance(**kw)
    await drive(instance_id, "ready")
    return instance_id


async def test_terminate_deletes_the_server_and_its_volumes(
    make_instance: Any, drive: Any, db: Any, provider: MemoryProvider, terminate: Any
) -> None:
    instance_id = await ready_instance(make_instance, drive)
    await terminate(instance_id)

    row = await drive(instance_id, "terminated")

    assert provider.servers == {} and provider.volumes == {}
    assert row["deleted_at"] is not None and row["terminated_at"] is not None
    assert all(v["deleted_at"] is not None for v in await db.volumes(instance_id))
    types = await db.action_types(instance_id)
    assert types[types.index("EXECUTE_TERMINATE") :] == [
        "EXECUTE_TERMINATE", "PROVIDER_TERMINATE", "PROVIDER_DELETE_VOLUME", "PROVIDER_DELETE_VOLUME",
    ]  # fmt: skip
    span = next(a for a in await db.actions(instance_id) if a["action_type"] == "EXECUTE_TERMINATE")
    assert span["status"] == "success" and span["duration_ms"] >= 0
    assert provider.count("terminate_server") == 1, "a stopping server is waited on, not terminated again"


async def test_a_persistent_data_volume_is_kept_detached_and_recorded(
    make_instance: Any, drive: Any, db: Any, provider: MemoryProvider, terminate: Any
) -> None:
    instance_id = await ready_instance(make_instance, drive, delete_on_terminate=False, data_volume_gb=500)
    await terminate(instance_id)

    await drive(instance_id, "terminated")

    (kept,) = provider.volumes.values()
    assert kept.size_bytes == 500 * 10**9 and kept.server_id is None
    boot, data = await db.volumes(instance_id)
    assert boot["deleted_at"] is not None
    assert data["deleted_at"] is None and data["detached_at"] is not None and data["provider_volume_id"] == kept.id
    assert "PROVIDER_DETACH_VOLUME" in await db.action_types(instance_id)
    span = next(a for a in await db.actions(instance_id) if a["action_type"] == "EXECUTE_TERMINATE")
    assert span["metadata"]["kept_volumes"] == [kept.id]


async def test_an_untracked_attached_volume_is_tracked_then_deleted(
    make_instance: Any, drive: Any, db: Any, provider: MemoryProvider, terminate: Any
) -> None:
    instance_id = await ready_instance(make_instance, drive, data_volume_gb=0)
    server_id = (await db.instance(instance_id))["provider_instance_id"]
    extra = provider.add_volume("local-1", "attached-by-hand", 30, server_id=server_id)
    await terminate(instance_id)

    await drive(instance_id, "terminated")

    assert provider.volumes == {}
    tracked = {v["provider_volume_id"]: v for v in await db.volumes(instance_id)}
    assert tracked[extra.id]["deleted_at"] is not None and tracked[extra.id]["size_bytes"] == 30 * 10**9
    discover = [a for a in await db.actions(instance_id) if a["action_type"] == "DISCOVER_VOLUMES"]
    assert [v["id"] for v in discover[-1]["metadata"]["untracked"]] == [extra.id]


async def test_a_server_already_gone_counts_as_done(
    make_instance: Any, drive: Any, db: Any, provider: MemoryProvider, terminate: Any
) -> None:
    instance_id = await ready_instance(make_instance, drive)
    provider.vanish((await db.instance(instance_id))["provider_instance_id"])
    await terminate(instance_id)

    await drive(instance_id, "terminated")

    assert provider.volumes == {}
    assert provider.count("terminate_server") == 0


async def test_repeating_termination_is_harmless(
    make_instance: Any, drive: Any, driver: Driver, provider: MemoryProvider, terminate: Any
) -> None:
    instance_id = await ready_instance(make_instance, drive)
    provider.fail("terminate_server", TransientError("503"), times=1)
    provider.fail("delete_volume", TransientError("412 in use"), times=2)
    await terminate(instance_id)
    await drive(instance_id, "terminated")
    calls = len(provider.calls)

    assert await driver.wake(instance_id) is False, "a terminated instance has nothing left to do"
    assert await driver.run_due() == []
    assert len(provider.calls) == calls


async def test_terminate_after_a_crash_between_create_and_record_finds_the_server_by_tag(
    make_instance: Any, run_pass: Any, expire_claim: Any, drive: Any, provider: MemoryProvider, terminate: Any
) -> None:
    instance_id = await make_instance()
    provider.crash_after("create_server")
    with pytest.raises(Crash):
        await run_pass(instance_id)
    await expire_claim(instance_id)
    await terminate(instance_id)

    await drive(instance_id, "terminated")

    assert provider.servers == {} and provider.volumes == {}


async def test_terminate_after_a_crash_between_volume_create_and_record_deletes_it(
    make_instance: Any, run_pass: Any, expire_claim: Any, drive: Any, db: Any, provider: MemoryProvider,
    terminate: Any,
) -> None:  # fmt: skip
    instance_id = await make_instance()
    provider.crash_after("create_volume")
    with pytest.raises(Crash):
        for _ in range(5):
            await run_pass(instance_id)
    await expire_claim(instance_id)
    await terminate(instance_id)

    await drive(instance_id, "terminated")

    assert provider.servers == {} and provider.volumes == {}
    names = [v["name"] for v in await db.volumes(instance_id)]
    assert f"inventiv-{instance_id[:8]}-data" in names


async def test_a_failed_instance_loses_even_its_persistent_volume(
    make_instance: Any, drive: Any, db: Any, provider: MemoryProvider
) -> None:
    provider.fail("power_on", OutOfStock("none left"))
    instance_id = await make_instance(delete_on_terminate=False)

    await drive(instance_id, "failed")

    assert provider.volumes == {}
    assert all(v["deleted_at"] is not None for v in await db.volumes(instance_id))


async def test_volumes_wait_for_detach_before_delete(
    make_instance: Any, drive: Any, driver: Driver, db: Any, provider: MemoryProvider, terminate: Any
) -> None:
    instance_id = await ready_instance(make_instance, drive, data_volume_gb=0)
    server_id = (await db.instance(instance_id))["provider_instance_id"]
    extra = provider.add_volume("local-1", "attached-by-hand", 10, server_id=server_id)
    provider.polls_to_gone = 10_000  # the server stays `stopping` until the test removes it
    await terminate(instance_id)
    await spin(driver, 5)
    assert extra.id in {v["provider_volume_id"] for v in await db.volumes(instance_id)}
    assert provider.count("terminate_server") == 1
    # The server goes, but the volume is still attached (to another server, say): it must not be deleted.
    other = provider.add_server("local-1", "elsewhere", ["someone-else"])
    provider.vanish(server_id)
    provider.volumes[extra.id].server_id = other.id
    await spin(driver, 5)
    assert (await db.instance(instance_id))["deleted_at"] is None
    assert extra.id in provider.volumes and ("delete_volume", extra.id) not in provider.calls
    provider.volumes[extra.id].server_id = None

    await drive(instance_id, "terminated")

    assert extra.id not in provider.volumes


async def test_a_server_stopped_in_place_is_powered_on_then_terminated(
    make_instance: Any, drive: Any, db: Any, provider: MemoryProvider, terminate: Any
) -> None:
    instance_id = await ready_instance(make_instance, drive)
    server = provider.servers[(await db.instance(instance_id))["provider_instance_id"]]
    server.state, server.stopped_in_place = ServerState.STOPPED, True
    await terminate(instance_id)

    await drive(instance_id, "terminated")

    assert provider.servers == {} and provider.volumes == {}
    steps = [(a["action_type"], a["status"]) for a in await db.actions(instance_id)]
    release = steps[[t for t, _ in steps].index("EXECUTE_TERMINATE") :]
    assert release[:3] == [
        ("EXECUTE_TERMINATE", "success"),
        ("PROVIDER_TERMINATE", "failed"),
        ("PROVIDER_START", "success"),
    ]
    assert ("PROVIDER_TERMINATE", "success") in release


async def _provisioning(make_instance: Any, **_: Any) -> str:
    instance_id: str = await make_instance()
    return instance_id


async def _booting(make_instance: Any, drive: Any, provider: MemoryProvider, **_: Any) -> str:
    provider.polls_to_running = 10_000
    instance_id: str = await make_instance()
    await drive(instance_id, "booting")
    return instance_id


async def _ready(make_instance: Any, drive: Any, **_: Any) -> str:
    return await ready_instance(make_instance, drive)


async def _failed_before_cleanup(
    make_instance: Any, run_pass: Any, db: Any, provider: MemoryProvider, **_: Any
) -> str:
    instance_id: str = await make_instance()
    provider.fail("power_on", OutOfStock("no stock"))
    await run_pass(instance_id)
    row = await db.instance(instance_id)
    assert (row["status"], row["deleted_at"]) == ("failed", None)
    assert provider.servers, "the cleanup has not run yet"
    return instance_id


async def _failed_after_cleanup(make_instance: Any, drive: Any, provider: MemoryProvider, **_: Any) -> str:
    instance_id: str = await make_instance()
    provider.fail("power_on", OutOfStock("no stock"))
    row = await drive(instance_id, "failed")
    assert row["deleted_at"] is not None and not provider.servers
    return instance_id


@pytest.mark.parametrize(
    "start", [_provisioning, _booting, _ready, _failed_before_cleanup, _failed_after_cleanup], ids=lambda f: f.__name__
)
async def test_every_path_into_terminating_ends_terminated(
    start: Any, make_instance: Any, drive: Any, run_pass: Any, db: Any, provider: MemoryProvider, terminate: Any,
    driver: Driver,
) -> None:  # fmt: skip
    instance_id = await start(make_instance=make_instance, drive=drive, run_pass=run_pass, db=db, provider=provider)
    await terminate(instance_id)

    row = await drive(instance_id, "terminated")

    assert row["deleted_at"] is not None and row["terminated_at"] is not None
    assert provider.servers == {} and provider.volumes == {}
    calls = len(provider.calls)
    assert await driver.run_due() == [] and await driver.wake(instance_id) is False, "nothing left to claim"
    assert len(provider.calls) == calls
