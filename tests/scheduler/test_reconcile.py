from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from memory_provider import MemoryProvider, serve_worker

from providers.base import GB, AttachedVolume, TransientError
from scheduler.reconcile import Repair, reconcile_volumes, repairs
from scheduler.tracking import described
from scheduler.volume_check import Expectation, Finding, Kind, compare


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
    server_id = row["provider_instance_id"]
    provider.vanish(server_id)

    assert await reconcile_volumes(rt) == 1

    row = await drive(instance_id, "failed")
    assert (row["error_code"], row["error_message"]) == ("PROVIDER_SERVER_GONE", f"server {server_id} is gone")
    assert provider.volumes == {}


async def test_the_servers_are_read_once_per_zone_and_the_volume_api_asked_only_about_volumes_to_track_or_gone(
    make_instance: Any, drive: Any, db: Any, rt: Any, provider: MemoryProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance_id = await make_instance()
    row = await drive(instance_id, "ready")
    for other in [await make_instance() for _ in range(2)]:
        await drive(other, "ready")
    server_id = row["provider_instance_id"]
    # The server lists its volumes as Scaleway lists sbs ones: without a size or a name.
    monkeypatch.setattr(provider, "_attached", lambda v: AttachedVolume(v.id, v.slot or "", v.volume_type))
    added = provider.add_volume("local-1", "by-hand", 10, server_id=server_id)
    data = next(v for v in provider.volumes.values() if v.name.endswith("-data"))
    await provider.detach_volume("local-1", server_id, data.id)
    provider.calls.clear()

    assert await reconcile_volumes(rt) == 2

    # One listing of the zone for the three instances, whatever their number; no server asked for by id.
    assert (provider.count("list_servers"), provider.count("get_server"), provider.count("list_server_volumes")) == (
        1, 0, 0,
    )  # fmt: skip
    assert sorted(subject for method, subject in provider.calls if method == "get_volume") == sorted(
        [added.id, data.id]
    )
    tracked = {v["provider_volume_id"]: v for v in await db.volumes(instance_id)}
    assert (tracked[added.id]["size_bytes"], tracked[added.id]["name"]) == (10 * GB, "by-hand")


async def test_described_fills_in_only_what_the_listing_left_out(provider: MemoryProvider) -> None:
    volume = provider.add_volume("local-1", "by-hand", 10)
    listed = AttachedVolume(volume.id, "1", "sbs_volume")
    assert await described(provider, "local-1", listed) == AttachedVolume(volume.id, "1", "sbs_volume", 10 * GB,
                                                                          "by-hand")  # fmt: skip
    complete = AttachedVolume(volume.id, "1", "sbs_volume", 5 * GB, "as-listed")
    assert await described(provider, "local-1", complete) == complete
    assert provider.count("get_volume") == 1, "a complete entry is not looked up"
    unknown = AttachedVolume("vol-nowhere", "2", "sbs_volume")
    assert await described(provider, "local-1", unknown) == unknown


async def test_a_mismatch_left_to_an_operator_is_logged_at_debug_level_only(
    make_instance: Any, drive: Any, db: Any, rt: Any, caplog: pytest.LogCaptureFixture
) -> None:
    instance_id = await make_instance()
    await drive(instance_id, "ready")
    async with db.pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE instance_volumes SET size_bytes = 1 WHERE instance_id = %s AND is_boot", (instance_id,)
        )

    caplog.set_level(logging.INFO, logger="scheduler.reconcile")
    assert await reconcile_volumes(rt) == 0, "a size is not this job's to repair"
    assert [r for r in caplog.records if r.name == "scheduler.reconcile"] == [], "every interval: not at info"

    caplog.set_level(logging.DEBUG, logger="scheduler.reconcile")
    await reconcile_volumes(rt)
    [record] = [r for r in caplog.records if r.name == "scheduler.reconcile"]
    assert (record.levelno, record.kind) == (logging.DEBUG, "size")


async def test_cloud_errors_skip_the_zone_or_the_instance(
    make_instance: Any, drive: Any, rt: Any, provider: MemoryProvider
) -> None:
    instance_id = await make_instance()
    row = await drive(instance_id, "ready")
    provider.add_volume("local-1", "by-hand", 10, server_id=row["provider_instance_id"])
    provider.calls.clear()
    provider.fail("list_servers", TransientError("503"))
    assert await reconcile_volumes(rt) == 0, "the zone could not be listed: nothing is judged"
    provider.servers[row["provider_instance_id"]].tags = ("renamed-by-hand",)
    provider.fail("get_server", TransientError("503"))
    assert await reconcile_volumes(rt) == 0, "left out of the listing, and could not be read by id"
    assert await reconcile_volumes(rt) == 1, "read by id: the volume added by hand is tracked"
    assert provider.count("get_server") == 2


# -- the statuses beyond ready: every live instance with a server ---------------------------------------


async def _set(db: Any, instance_id: str, assignment: str) -> None:
    async with db.pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(f"UPDATE instances SET {assignment} WHERE id = %s", (instance_id,))


async def test_a_booting_instance_is_reconciled_and_failed_when_its_server_vanishes(
    make_instance: Any, drive: Any, db: Any, rt: Any, provider: MemoryProvider
) -> None:
    provider.polls_to_running = 10**6  # stays starting: the instance stays booting
    instance_id = await make_instance()
    row = await drive(instance_id, "booting")
    added = provider.add_volume("local-1", "by-hand", 10, server_id=row["provider_instance_id"])

    assert await reconcile_volumes(rt) == 1
    assert added.id in {v["provider_volume_id"] for v in await db.volumes(instance_id)}

    provider.vanish(row["provider_instance_id"])
    assert await reconcile_volumes(rt) == 1
    row = await db.instance(instance_id)
    assert (row["status"], row["error_code"]) == ("failed", "PROVIDER_SERVER_GONE")


async def test_a_provisioning_instance_with_its_volumes_discovered_is_reconciled_but_never_failed(
    make_instance: Any, run_pass: Any, db: Any, rt: Any, provider: MemoryProvider
) -> None:
    instance_id = await make_instance()
    provider.fail("attach_volume", TransientError("503"))
    await run_pass(instance_id)  # server created, volumes discovered, data volume created, attach to retry
    row = await db.instance(instance_id)
    assert row["status"] == "provisioning" and row["provider_instance_id"] is not None
    server_id = row["provider_instance_id"]
    added = provider.add_volume("local-1", "by-hand", 10, server_id=server_id)

    assert await reconcile_volumes(rt) == 1, "the by-hand volume; the data volume is not attached yet, as recorded"
    tracked = {v["provider_volume_id"]: v for v in await db.volumes(instance_id)}
    assert tracked[added.id]["attached_at"] is not None

    provider.vanish(server_id)
    assert await reconcile_volumes(rt) == 0, "provisioning notices a vanished server itself"
    assert (await db.instance(instance_id))["status"] == "provisioning"


async def test_a_provisioning_instance_before_discovery_is_left_to_provisioning(
    make_instance: Any, run_pass: Any, db: Any, rt: Any, provider: MemoryProvider
) -> None:
    instance_id = await make_instance()
    provider.fail("list_server_volumes", TransientError("503"))
    await run_pass(instance_id)  # server created; discovering its volumes is to be retried
    assert (await db.instance(instance_id))["provider_instance_id"] is not None

    # Tracking the boot volume here would skip discovery, which tags it for the orphan sweep.
    assert await reconcile_volumes(rt) == 0
    assert await db.volumes(instance_id) == []


async def test_a_failed_instance_not_yet_cleaned_up_is_reconciled_but_not_failed_again(
    make_instance: Any, drive: Any, db: Any, rt: Any, provider: MemoryProvider
) -> None:
    instance_id = await make_instance()
    row = await drive(instance_id, "ready")
    server_id = row["provider_instance_id"]
    # Failed, its release not started yet (due in an hour).
    await _set(db, instance_id, "status = 'failed', error_code = 'BY_HAND', next_attempt_at = now() + interval '1h'")
    added = provider.add_volume("local-1", "by-hand", 10, server_id=server_id)

    assert await reconcile_volumes(rt) == 1
    assert added.id in {v["provider_volume_id"] for v in await db.volumes(instance_id)}

    provider.vanish(server_id)
    assert await reconcile_volumes(rt) == 0, "its release is under way: a gone server is its progress"
    assert (await db.instance(instance_id))["error_code"] == "BY_HAND"
    assert "INSTANCE_FAILED" not in await db.action_types(instance_id)


async def test_an_instance_a_pass_holds_is_left_alone(
    make_instance: Any, drive: Any, db: Any, rt: Any, provider: MemoryProvider
) -> None:
    instance_id = await make_instance()
    row = await drive(instance_id, "ready")
    provider.add_volume("local-1", "by-hand", 10, server_id=row["provider_instance_id"])
    await _set(db, instance_id, "claim_token = gen_random_uuid(), claim_expires_at = now() + interval '1 minute'")
    assert await reconcile_volumes(rt) == 0

    await _set(db, instance_id, "claim_expires_at = now() - interval '1 second'")  # its scheduler died
    assert await reconcile_volumes(rt) == 1


async def test_finished_and_terminating_instances_are_not_reconciled(
    make_instance: Any, drive: Any, db: Any, rt: Any, provider: MemoryProvider
) -> None:
    instance_id = await make_instance()
    row = await drive(instance_id, "ready")
    provider.add_volume("local-1", "by-hand", 10, server_id=row["provider_instance_id"])
    for change in ("status = 'terminating'", "status = 'failed', deleted_at = now()"):
        await _set(db, instance_id, change)
        assert await reconcile_volumes(rt) == 0, change


@pytest.mark.parametrize(
    ("kind", "status", "repair"),
    [
        (Kind.UNTRACKED, "provisioning", Repair.TRACK),
        (Kind.DETACHED, "failed", Repair.MARK_DETACHED),
        (Kind.WRONG_SERVER, "ready", Repair.MARK_DETACHED),
        (Kind.VOLUME_MISSING, "booting", Repair.FORGET),
        (Kind.SERVER_MISSING, "ready", Repair.FAIL),
        (Kind.SERVER_MISSING, "booting", Repair.FAIL),
        (Kind.SERVER_MISSING, "provisioning", None),
        (Kind.SIZE, "ready", None),
        (Kind.UNEXPECTED_ATTACHMENT, "ready", None),
        (Kind.DELETE_ON_TERMINATE, "ready", None),
    ],
)
def test_repairs(kind: Kind, status: str, repair: Repair | None) -> None:
    finding = Finding(kind, "i", "v", "what", "expected", "actual")
    assert repairs([finding], status) == ([(repair, finding)] if repair else [])


@pytest.mark.parametrize(
    ("status", "repaired"),
    [("ready", [Repair.FAIL]), ("booting", [Repair.FAIL]), ("provisioning", []), ("failed", []), ("terminating", [])],
)
def test_a_gone_server_fails_the_instance_only_where_nothing_else_notices(status: str, repaired: list[Repair]) -> None:
    expect = Expectation.from_row({"id": "i", "status": status, "provider_instance_id": "srv-1",
                                   "data_volume_delete_on_terminate": True})  # fmt: skip
    assert [repair for repair, _ in repairs(compare(expect, [], None, {}), status)] == repaired
