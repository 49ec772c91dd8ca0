from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from memory_provider import MemoryProvider, serve_worker

from providers.base import TransientError
from scheduler.reconcile import reconcile_volumes


@pytest.fixture
async def provider() -> AsyncIterator[MemoryProvider]:
    async with serve_worker("Qwen/Qwen2.5-7B-Instruct") as address:
        yield MemoryProvider("mock", worker_address=address)


async def test_attached_volumes_are_tracked_and_vanished_ones_recorded(
    make_instance: Any, drive: Any, db: Any, rt: Any, provider: MemoryProvider
) -> None:
    instance_id = await make_instance(delete_on_terminate=False)
    row = await drive(instance_id, "ready")
    server_id = row["provider_instance_id"]
    assert await reconcile_volumes(rt) == 0, "nothing changed yet"
    added = provider.add_volume("local-1", "by-hand", 10, server_id=server_id)
    data = next(v for v in provider.volumes.values() if v.name.endswith("-data"))
    await provider.detach_volume("local-1", server_id, data.id)  # detached, still exists
    boot = next(v for v in provider.volumes.values() if v.slot == "0")
    del provider.volumes[boot.id]  # gone entirely (the cloud lost it)

    assert await reconcile_volumes(rt) == 3

    tracked = {v["provider_volume_id"]: v for v in await db.volumes(instance_id)}
    assert tracked[added.id]["delete_on_terminate"] is False, "follows what the deployment asked"
    assert tracked[added.id]["attached_at"] is not None and tracked[added.id]["size_bytes"] == 10 * 10**9
    assert tracked[data.id]["detached_at"] is not None and tracked[data.id]["deleted_at"] is None
    assert tracked[boot.id]["deleted_at"] is not None
    types = await db.action_types(instance_id)
    assert {"RECONCILE_TRACK_VOLUME", "RECONCILE_VOLUME_DETACHED", "RECONCILE_VOLUME_GONE"} <= set(types)
    assert await reconcile_volumes(rt) == 0, "a second run finds nothing new"


async def test_a_ready_instance_whose_server_vanished_is_failed_and_released(
    make_instance: Any, drive: Any, rt: Any, provider: MemoryProvider
) -> None:
    instance_id = await make_instance()
    row = await drive(instance_id, "ready")
    provider.vanish(row["provider_instance_id"])

    assert await reconcile_volumes(rt) == 1

    row = await drive(instance_id, "failed")
    assert row["error_code"] == "PROVIDER_SERVER_GONE"
    assert provider.volumes == {}


async def test_cloud_errors_skip_the_instance(
    make_instance: Any, drive: Any, rt: Any, provider: MemoryProvider
) -> None:
    instance_id = await make_instance()
    await drive(instance_id, "ready")
    provider.fail("get_server", TransientError("503"))
    assert await reconcile_volumes(rt) == 0
