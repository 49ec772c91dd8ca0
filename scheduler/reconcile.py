"""Volume reconciliation (interval job): what each ready instance's server has attached vs what is tracked.

A volume attached behind our back is tracked (so termination deletes or keeps it like the others); a
tracked volume the server no longer lists is recorded detached, or deleted if the cloud has no such
volume any more. A ready instance whose server vanished is failed (and so released).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from providers.base import Provider, ProviderError
from scheduler import action_log
from scheduler.driver import fail_instance
from scheduler.fanout import fan_out
from scheduler.retry import StepFailed
from scheduler.runtime import Runtime
from scheduler.tracking import track_volume
from scheduler.volumes import TrackedVolume, delete_on_terminate_for, untracked, vanished
from sql.queries import fetch_all, queries

log = logging.getLogger(__name__)

# Instances reconciled at once; each costs a few cloud calls.
_CONCURRENT = 8


async def reconcile_volumes(rt: Runtime) -> int:
    """Reconcile every ready instance; returns how many changes were recorded."""
    async with rt.pool.acquire() as conn:
        rows = await fetch_all(queries.instances.list_instances_to_reconcile(conn))
    return sum(await fan_out(rows, partial(_reconcile_or_skip, rt), limit=_CONCURRENT))


async def _reconcile_or_skip(rt: Runtime, row: dict[str, Any]) -> int:
    # One instance's cloud trouble must not stop the others from being reconciled.
    try:
        return await _reconcile(rt, row)
    except ProviderError as exc:
        log.warning(
            "reconciliation skipped an instance",
            extra={"instance_id": row["id"], "error_code": exc.code, "error": exc.message},
        )
        return 0


async def _reconcile(rt: Runtime, row: dict[str, Any]) -> int:
    instance_id, zone, server_id = str(row["id"]), row["zone_code"], row["provider_instance_id"]
    provider = rt.providers.get(row["provider_code"])
    server = await provider.get_server(zone, server_id)
    if server is None:
        await fail_instance(rt, instance_id, StepFailed("PROVIDER_SERVER_GONE", f"server {server_id} is gone"))
        return 1
    attached = await provider.list_server_volumes(zone, server_id)
    async with rt.pool.acquire() as conn:
        tracked = [
            TrackedVolume.from_row(v)
            for v in await fetch_all(queries.instance_volumes.list_tracked_volumes(conn, instance_id=instance_id))
        ]
    changes = 0
    for volume in untracked(tracked, attached):
        delete = delete_on_terminate_for(volume, row["data_volume_delete_on_terminate"])
        async with rt.pool.acquire() as conn:
            await track_volume(conn, instance_id, volume, delete_on_terminate=delete)
        await action_log.record(
            rt.pool,
            instance_id,
            "RECONCILE_TRACK_VOLUME",
            volume_id=volume.id,
            slot=volume.slot,
            volume_type=volume.volume_type,
            delete_on_terminate=delete,
        )
        changes += 1
    for gone in vanished(tracked, attached):
        changes += await _record_vanished(rt, provider, zone, instance_id, gone)
    return changes


async def _record_vanished(rt: Runtime, provider: Provider, zone: str, instance_id: str, volume: TrackedVolume) -> int:
    exists = await provider.get_volume(zone, volume.provider_volume_id) is not None
    mark = queries.instance_volumes.mark_volume_detached if exists else queries.instance_volumes.mark_volume_deleted
    async with rt.pool.acquire() as conn:
        await mark(conn, instance_id=instance_id, provider_volume_id=volume.provider_volume_id)
    await action_log.record(
        rt.pool,
        instance_id,
        "RECONCILE_VOLUME_DETACHED" if exists else "RECONCILE_VOLUME_GONE",
        volume_id=volume.provider_volume_id,
    )
    return 1
