"""Failing an instance: the one way a pass (the driver's provisioning deadline and fatal errors) or a
job (reconcile finding its server gone) marks an instance failed. Its release then cleans up what it holds."""

from __future__ import annotations

import logging

from inventiv.action_types import ActionType
from scheduler import action_log
from scheduler.retry import error_fields
from scheduler.runtime import Runtime
from sql.queries import queries

log = logging.getLogger(__name__)


async def fail_instance(rt: Runtime, instance_id: str, exc: BaseException) -> None:
    """Mark the instance failed (its release then cleans up what it holds) and say why."""
    code, message = error_fields(exc)
    async with rt.pool.acquire() as conn:
        changed = await queries.instances.mark_instance_failed(
            conn, instance_id=instance_id, error_code=code, error_message=message
        )
    if not changed:
        return
    log.warning("instance failed", extra={"instance_id": instance_id, "error_code": code, "error": message})
    await action_log.close_span(rt.pool, instance_id, ActionType.HEALTH_CHECK, exc)
    await action_log.record(rt.pool, instance_id, ActionType.INSTANCE_FAILED, error=exc)
    await rt.workers_changed(instance_id)
