from __future__ import annotations

import asyncio
from typing import Any

import pytest

from scheduler.replacement import is_dead, retire_dead_workers, should_replace
from scheduler.runtime import Runtime


@pytest.mark.parametrize(
    ("worker_status", "silent_s", "dead"),
    [
        ("stale", 600.0, True),
        ("stale", 900.0, True),
        ("unhealthy", 601.0, True),
        ("stale", 599.0, False),
        ("unhealthy", 10.0, False),
        ("ready", 3600.0, False),  # it answers: whatever its heartbeat says, it is alive
        ("starting", 3600.0, False),
        ("stale", None, False),
    ],
)
def test_is_dead(worker_status: str, silent_s: float | None, dead: bool) -> None:
    assert is_dead(worker_status, silent_s, dead_after_s=600.0) is dead


@pytest.mark.parametrize(
    ("asked", "recent", "per_hour", "replace"),
    [(True, 0, 3, True), (True, 2, 3, True), (True, 3, 3, False), (True, 0, 0, False), (False, 0, 3, False)],
)
def test_should_replace(asked: bool, recent: int, per_hour: int, replace: bool) -> None:
    assert should_replace(asked, recent, per_hour) is replace


async def _ready(db: Any, instance_id: str, *, worker_status: str = "stale", silent_s: float = 700.0,
                 replace: bool = False) -> None:  # fmt: skip
    await db.rows(
        "UPDATE instances SET status = 'ready', ready_at = now() - interval '1 hour', worker_status = %s, "
        "worker_last_heartbeat_at = now() - make_interval(secs => %s), replace_on_failure = %s, "
        "data_volume_gb = 40, ip_address = '127.0.0.1' WHERE id = %s RETURNING id",
        worker_status, silent_s, replace, instance_id,
    )  # fmt: skip


async def _replacements(db: Any, instance_id: str) -> list[dict[str, Any]]:
    return await db.rows("SELECT * FROM instances WHERE replaces_instance_id = %s", instance_id)


async def test_a_dead_worker_is_terminated_and_not_replaced_unless_asked(
    make_instance: Any, db: Any, rt: Runtime
) -> None:
    dead = await make_instance()
    quiet = await make_instance()
    await _ready(db, dead)
    await _ready(db, quiet, silent_s=30.0)  # stale, but not for long enough

    retired = await retire_dead_workers(rt)

    assert [r.instance_id for r in retired] == [dead]
    row = await db.instance(dead)
    assert (row["status"], row["error_code"]) == ("terminating", "WORKER_DEAD")
    assert "stale for 700 s" in row["error_message"]
    assert row["next_attempt_at"] is not None and row["terminating_at"] is not None
    (log,) = [a for a in await db.actions(dead) if a["action_type"] == "WORKER_DEAD"]
    assert (log["status"], log["error_code"]) == ("failed", "WORKER_DEAD")
    assert await _replacements(db, dead) == []
    assert (await db.instance(quiet))["status"] == "ready"


async def test_a_dead_worker_of_a_deployment_that_asked_is_replaced_once(
    make_instance: Any, db: Any, rt: Runtime
) -> None:
    dead = await make_instance()
    await _ready(db, dead, worker_status="unhealthy", replace=True)

    # Two schedulers (or a retried job) at once: one retires it, one replacement.
    first, second = await asyncio.gather(retire_dead_workers(rt), retire_dead_workers(rt))
    await retire_dead_workers(rt)

    (retired,) = first + second
    (new,) = await _replacements(db, dead)
    assert retired.replacement_id == str(new["id"])
    old = await db.instance(dead)
    same = ("provider_id", "zone_id", "instance_type_id", "model_id", "organization_id", "worker_port", "engine",
            "data_volume_gb", "data_volume_delete_on_terminate", "replace_on_failure")  # fmt: skip
    assert {k: new[k] for k in same} == {k: old[k] for k in same}
    assert (new["status"], new["lineage_id"], new["provider_instance_id"]) == ("provisioning", dead, None)
    assert new["provisioning_deadline_at"] is not None
    (request,) = await db.actions(str(new["id"]))
    assert (request["action_type"], request["metadata"]) == ("REQUEST_CREATE", {"replaces_instance_id": dead})


async def test_a_crash_looping_lineage_stops_being_replaced(make_instance: Any, db: Any, rt: Runtime) -> None:
    rt.settings = rt.settings.replace(replacements_per_hour=2)
    current = await make_instance()
    chain = [current]
    for _ in range(3):
        await _ready(db, current, replace=True)
        (retired,) = await retire_dead_workers(rt)
        if retired.replacement_id is None:
            break
        current = retired.replacement_id
        chain.append(current)

    assert len(chain) == 3, "the first instance and two replacements"
    assert retired.refused == "2 replacements in the last hour (limit 2)"
    lineage = await db.rows("SELECT lineage_id FROM instances WHERE id = ANY(%s::uuid[])", chain[1:])
    assert {r["lineage_id"] for r in lineage} == {chain[0]}
    refusals = [a for a in await db.actions(chain[-1]) if a["action_type"] == "REPLACEMENT_REFUSED"]
    assert [a["error_code"] for a in refusals] == ["REPLACEMENT_LIMIT"]
    assert (await db.instance(chain[-1]))["status"] == "terminating"


async def test_a_worker_that_answered_again_or_an_instance_deleted_meanwhile_is_left_alone(
    make_instance: Any, db: Any, rt: Runtime
) -> None:
    answered = await make_instance()
    deleted = await make_instance()
    for instance_id in (answered, deleted):
        await _ready(db, instance_id, replace=True)
    await db.rows("UPDATE instances SET worker_status = 'ready' WHERE id = %s RETURNING id", answered)
    await db.rows("UPDATE instances SET status = 'terminating' WHERE id = %s RETURNING id", deleted)

    assert await retire_dead_workers(rt) == []
    assert (await db.instance(answered))["status"] == "ready"
    assert await _replacements(db, answered) == [] and await _replacements(db, deleted) == []
