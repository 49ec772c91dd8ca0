"""Dead workers: a ready instance whose worker stopped answering long ago is terminated, and replaced when
its deployment asked for it (`replace_on_failure`).

Health checks mark a silent worker `unhealthy`, then `stale` (scheduler/health.py): the gateway stops
routing to it, but the machine keeps running. Once it has been silent for INVENTIV_WORKER_DEAD_AFTER_S it
is dead: its instance goes `terminating` with error WORKER_DEAD (the release then runs as for a DELETE),
and, for a deployment that asked, a new instance with the same model, type, zone, organization and
volume settings is requested in the same transaction, linked by `replaces_instance_id`. The status
change only happens from `ready`, and the link is unique, so two schedulers or a retried job replace a
dead instance once. A chain of replacements (its `lineage_id`) gets at most INVENTIV_REPLACEMENTS_PER_HOUR
in a rolling hour: a model that crashes every worker it runs on is left for an operator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from inventiv.action_types import ActionType
from inventiv.statuses import WorkerStatus
from scheduler.runtime import Runtime
from sql.pool import transaction
from sql.queries import fetch_all, queries

log = logging.getLogger(__name__)

# The window replacements of one lineage are counted over (INVENTIV_REPLACEMENTS_PER_HOUR).
REPLACEMENT_WINDOW_S = 3600.0
WORKER_DEAD = "WORKER_DEAD"
REPLACEMENT_LIMIT = "REPLACEMENT_LIMIT"


def is_dead(worker_status: str, silent_s: float | None, dead_after_s: float) -> bool:
    """Whether a ready instance's worker is dead: silent (stale or unhealthy) for at least dead_after_s."""
    if worker_status not in (WorkerStatus.STALE, WorkerStatus.UNHEALTHY) or silent_s is None:
        return False
    return silent_s >= dead_after_s


def should_replace(replace_on_failure: bool, recent_replacements: int, per_hour: int) -> bool:
    """Whether a dead instance gets a replacement: asked for, and its lineage under the hourly limit."""
    return replace_on_failure and recent_replacements < per_hour


@dataclass(frozen=True, slots=True)
class Retired:
    instance_id: str
    replacement_id: str | None
    # Why no replacement was made although one was asked for (the hourly limit); None otherwise.
    refused: str | None = None


async def retire_dead_workers(rt: Runtime) -> list[Retired]:
    """Terminate (and replace, when asked) every ready instance whose worker is dead."""
    dead_after = rt.settings.worker_dead_after_s
    async with rt.pool.acquire() as conn:
        rows = await fetch_all(queries.instances.list_silent_workers(conn))
    retired = []
    for row in rows:
        if not is_dead(row["worker_status"], row["silent_s"], dead_after):
            continue
        done = await _retire(rt, str(row["id"]), row)
        if done is not None:
            retired.append(done)
            await rt.workers_changed(done.instance_id)
    return retired


async def _retire(rt: Runtime, instance_id: str, row: dict[str, Any]) -> Retired | None:
    settings = rt.settings
    message = f"worker {row['worker_status']} for {row['silent_s']:.0f} s (limit {settings.worker_dead_after_s:g} s)"
    async with transaction(rt.pool) as conn:
        marked = await queries.instances.mark_instance_worker_dead(
            conn, instance_id=instance_id, error_code=WORKER_DEAD, error_message=message
        )
        if marked is None:
            return None  # it answered, was deleted, or another scheduler retired it first
        replacement_id, refused = None, None
        if marked["replace_on_failure"]:
            recent = await queries.instances.count_lineage_replacements(
                conn, lineage_id=str(marked["lineage_id"]), window_s=REPLACEMENT_WINDOW_S
            )
            if should_replace(True, int(recent or 0), settings.replacements_per_hour):
                new = await queries.instances.insert_replacement_instance(
                    conn, instance_id=instance_id, deadline_s=settings.provisioning_deadline_s
                )
                replacement_id = None if new is None else str(new["id"])
            else:
                refused = f"{recent} replacements in the last hour (limit {settings.replacements_per_hour})"
        await _log(conn, instance_id, message, replacement_id, refused)
    log.warning(
        "worker dead; instance terminated",
        extra={"instance_id": instance_id, "replacement_id": replacement_id, "replacement_refused": refused},
    )
    return Retired(instance_id, replacement_id, refused)


async def _log(conn: Any, instance_id: str, message: str, replacement_id: str | None, refused: str | None) -> None:
    record = queries.action_logs.record_scheduler_action
    metadata = {"replacement_id": replacement_id} if replacement_id else {"replacement_refused": refused}
    await record(
        conn, instance_id=instance_id, action_type=ActionType.WORKER_DEAD, status="failed", error_code=WORKER_DEAD,
        error_message=message, metadata=_json(metadata) if replacement_id or refused else None, duration_ms=0,
    )  # fmt: skip
    if replacement_id is not None:
        await record(
            conn, instance_id=replacement_id, action_type=ActionType.REQUEST_CREATE, status="success", error_code=None,
            error_message=None, metadata=_json({"replaces_instance_id": instance_id}), duration_ms=0,
        )  # fmt: skip
    elif refused is not None:
        await record(
            conn, instance_id=instance_id, action_type=ActionType.REPLACEMENT_REFUSED, status="failed",
            error_code=REPLACEMENT_LIMIT, error_message=refused, metadata=None, duration_ms=0,
        )  # fmt: skip


def _json(metadata: dict[str, Any]) -> str:
    return orjson.dumps(metadata).decode()
