from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from memory_provider import MemoryProvider, serve_worker

from providers.base import ServerState
from scheduler import sweep
from scheduler.sweep import Kind, Ownership, Resource, find_orphans, sweep_orphans

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
OLD = NOW - timedelta(hours=1)
LIVE = "11111111-1111-1111-1111-111111111111"
DEAD = "22222222-2222-2222-2222-222222222222"
OWNED = Ownership(live_instance_ids=frozenset({LIVE}), protected_ids=frozenset({"kept-volume"}))


def res(id: str, *tags: str, created_at: datetime | None = OLD, kind: Kind = Kind.SERVER) -> Resource:
    return Resource(kind, id, id, tags, created_at)


@pytest.mark.parametrize(
    ("resource", "orphan"),
    [
        (res("a", "inventiv", f"instance={DEAD}"), True),
        (res("b", "inventiv"), True),  # ours, owner unknown
        (res("c", "inventiv", f"instance={LIVE}"), False),
        (res("d", "other-deployment", f"instance={DEAD}"), False),  # never touch another deployment's
        (res("e", f"instance={DEAD}"), False),
        (res("f", "inventiv", f"instance={DEAD}", created_at=NOW - timedelta(seconds=60)), False),  # grace
        (res("g", "inventiv", f"instance={DEAD}", created_at=None), True),
        (res("kept-volume", "inventiv", f"instance={DEAD}", kind=Kind.VOLUME), False),
    ],
)
def test_find_orphans(resource: Resource, orphan: bool) -> None:
    found = find_orphans([resource], deployment_tag="inventiv", owned=OWNED, now=NOW, grace_s=900)
    assert found == ([resource] if orphan else [])


@pytest.mark.parametrize(
    ("used_by", "zone_busy", "orphan"),
    [(None, False, True), ("srv-1", False, False), (None, True, False), ("srv-1", True, False)],
)
def test_a_workers_firewall_goes_only_once_no_server_uses_it_and_no_instance_lives_in_its_zone(
    used_by: str | None, zone_busy: bool, orphan: bool
) -> None:
    firewall = Resource(Kind.FIREWALL, "sg-1", "inventiv-workers", ("inventiv", "role=workers"), OLD, used_by)
    found = find_orphans([firewall], deployment_tag="inventiv", owned=OWNED, now=NOW, grace_s=900,
                         zone_busy=zone_busy)  # fmt: skip
    assert found == ([firewall] if orphan else [])


@pytest.fixture
async def provider() -> AsyncIterator[MemoryProvider]:
    async with serve_worker("Qwen/Qwen2.5-7B-Instruct") as address:
        yield MemoryProvider("mock", worker_address=address)


async def use_zone(make_instance: Any, db_pool: Any) -> None:
    """An instance that got as far as asking for a server: its zone is on the sweep list."""
    instance_id = await make_instance()
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("UPDATE instances SET create_requested_at = now() WHERE id = %s", (instance_id,))


@pytest.fixture
def sweep_rt(rt: Any) -> Any:
    rt.settings = rt.settings.replace(orphan_grace_s=0)
    return rt


async def test_sweep_deletes_only_our_orphans(
    make_instance: Any, drive: Any, db: Any, sweep_rt: Any, provider: MemoryProvider, terminate: Any
) -> None:
    live = await make_instance()
    await drive(live, "ready")
    kept_owner = await make_instance(delete_on_terminate=False)
    await drive(kept_owner, "ready")
    await terminate(kept_owner)
    await drive(kept_owner, "terminated")
    kept = {v.id for v in provider.volumes.values() if v.server_id is None}
    orphan_server = provider.add_server("local-1", "leftover", ["inventiv", f"instance={DEAD}"])
    orphan_volume = provider.add_volume("local-1", "leftover-data", 10, ["inventiv", f"instance={DEAD}"])
    theirs = provider.add_server("local-1", "theirs", ["staging", f"instance={DEAD}"])
    before = set(provider.servers) | set(provider.volumes)

    found = await sweep_orphans(sweep_rt)

    assert {o.id for o in found} == {orphan_server.id, orphan_volume.id}
    assert orphan_server.id not in provider.servers and orphan_volume.id not in provider.volumes
    assert theirs.id in provider.servers, "another deployment's server is never touched"
    assert kept <= set(provider.volumes), "kept volumes of terminated instances stay"
    assert before - {orphan_server.id, orphan_volume.id} == set(provider.servers) | set(provider.volumes)
    logged = await db.rows(
        "SELECT action_type, status, instance_id, metadata FROM action_logs WHERE action_type LIKE 'ORPHAN_%%' "
        "ORDER BY action_type"
    )
    assert [(r["action_type"], r["status"], r["instance_id"]) for r in logged] == [
        ("ORPHAN_SERVER_DELETE", "success", None), ("ORPHAN_VOLUME_DELETE", "success", None),
    ]  # fmt: skip
    assert logged[0]["metadata"]["resource_id"] == orphan_server.id and logged[0]["metadata"]["dry_run"] is False


async def test_dry_run_only_reports(
    make_instance: Any, db_pool: Any, db: Any, sweep_rt: Any, provider: MemoryProvider
) -> None:
    await use_zone(make_instance, db_pool)
    sweep_rt.settings = sweep_rt.settings.replace(orphan_dry_run=True)
    orphan = provider.add_server("local-1", "leftover", ["inventiv"])

    found = await sweep_orphans(sweep_rt)

    assert [o.id for o in found] == [orphan.id] and orphan.id in provider.servers
    (row,) = await db.rows("SELECT metadata FROM action_logs WHERE action_type = 'ORPHAN_SERVER_DELETE'")
    assert row["metadata"]["dry_run"] is True and row["metadata"]["skipped"] == "dry_run"


async def test_orphans_of_a_known_instance_are_logged_against_it_and_attached_volumes_wait(
    make_instance: Any, drive: Any, db: Any, db_pool: Any, sweep_rt: Any, provider: MemoryProvider
) -> None:
    instance_id = await make_instance()
    await drive(instance_id, "ready")
    # The row says released, but the cloud still has its server (a bug, a restore from backup...).
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE instances SET status = 'terminated', deleted_at = now() WHERE id = %s", (instance_id,)
        )
    server_id = next(iter(provider.servers))
    assert provider.servers[server_id].state is ServerState.RUNNING

    await sweep_orphans(sweep_rt)
    assert provider.servers == {}
    attached_first = await db.rows(
        "SELECT metadata FROM action_logs WHERE action_type = 'ORPHAN_VOLUME_DELETE' AND instance_id = %s",
        instance_id,
    )
    assert {r["metadata"].get("skipped") for r in attached_first} == {"attached"}
    await sweep_orphans(sweep_rt)

    assert provider.volumes == {}, "the next sweep deletes the volumes its server left"
    assert "ORPHAN_SERVER_DELETE" in await db.action_types(instance_id)


async def test_the_grace_period_protects_young_resources(
    make_instance: Any, db_pool: Any, rt: Any, provider: MemoryProvider
) -> None:
    await use_zone(make_instance, db_pool)
    young = provider.add_server("local-1", "young", ["inventiv"], created_at=datetime.now(UTC))
    assert await sweep_orphans(rt) == []
    assert young.id in provider.servers


async def test_zones_never_used_are_not_swept(make_instance: Any, rt: Any, provider: MemoryProvider) -> None:
    await make_instance()  # never got as far as asking for a server
    provider.add_server("local-1", "leftover", ["inventiv"])
    assert await sweep_orphans(rt) == []
    assert provider.calls == []


async def test_ownership_is_read_once_for_every_zone_after_all_were_listed(
    make_instance: Any, db_pool: Any, sweep_rt: Any, provider: MemoryProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    await use_zone(make_instance, db_pool)
    other = await make_instance(provider="scaleway", zone="fr-par-2", instance_type="L40S-1-48G")
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("UPDATE instances SET create_requested_at = now() WHERE id = %s", (other,))
    provider.add_volume("fr-par-2", "left", 1, ("inventiv", f"instance={DEAD}"))
    reads: list[int] = []
    read = sweep.ownership

    async def counted(pool: Any) -> sweep.Ownership:
        reads.append(len(provider.calls))
        return await read(pool)

    monkeypatch.setattr(sweep, "ownership", counted)

    found = await sweep_orphans(sweep_rt)

    assert [r.name for r in found] == ["left"]
    listings = [m for m, _ in provider.calls if m.startswith("list_")]
    assert reads == [len(listings)], "one read, after both zones' listings"
    assert len(listings) == 4, "servers and volumes of each of the two zones"
