"""GET /instances, GET /instances/{id}, DELETE /instances/{id}.

Deleting asks the scheduler to terminate: the row turns `terminating` (logged as REQUEST_TERMINATE)
and a TERMINATE command wakes the scheduler, which owns every state after that.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any

import aiopg
from aiohttp import web

from gateway import state
from gateway.auth import Principal
from gateway.control import notify
from gateway.control.access import admin
from gateway.control.input_validation import FieldSpec, path_uuid
from gateway.control.instance_view import group_by_instance, instance_detail, instance_summary
from gateway.control.pagination import BY_CREATED_AT, PAGE_PARAMS, fetch_page, page_body
from gateway.control.responses import dumps, json_response
from gateway.error_codes import ErrorCode
from gateway.errors import ApiError, not_found
from inventiv import redis_keys
from inventiv.action_types import ActionType
from inventiv.statuses import InstanceStatus
from sql.pool import transaction
from sql.queries import fetch_all, queries

STATUSES = tuple(InstanceStatus)

LIST_QUERY = {
    "status": FieldSpec("str", choices=STATUSES),
    "model": FieldSpec("str", description="model id or hf_repo_id"),
    "provider": FieldSpec("str", description="provider id or code"),
    "zone": FieldSpec("str", description="zone id or code"),
    **PAGE_PARAMS,
}

log = logging.getLogger(__name__)


class Termination(Enum):
    REQUEST = "request"  # mark terminating, log, send TERMINATE
    REPEAT = "repeat"  # already terminating: nothing to write; the command is sent again (harmless)
    CONFLICT = "conflict"  # already terminated


def termination_for(status: str) -> Termination:
    """What DELETE does for an instance in `status`. Failed instances may still hold cloud resources,
    so they can be terminated like any other."""
    if status == InstanceStatus.TERMINATED:
        return Termination.CONFLICT
    if status == InstanceStatus.TERMINATING:
        return Termination.REPEAT
    return Termination.REQUEST


async def fetch_instance_detail(pool: aiopg.Pool, instance_id: str, organization_id: str) -> dict[str, Any] | None:
    async with pool.acquire() as conn:
        rows = await fetch_all(queries.instances.list_visible_instances(
            conn, organization_id=organization_id, instance_id=instance_id, status=None, model=None, provider=None,
            zone=None, after_created_at=None, after_id=None, limit=1,
        ))
        if not rows:
            return None
        volumes = await fetch_all(queries.instance_volumes.list_volumes_of_instances(conn, instance_ids=[instance_id]))
    return instance_detail(rows[0], volumes)


async def list_instances(request: web.Request) -> web.Response:
    return json_response(await instance_page(request, admin(request)))


async def instance_page(request: web.Request, principal: Principal) -> dict[str, Any]:
    """One page of the instances the principal sees, filtered by the query string (LIST_QUERY), each with
    its storage summary. The console's fleet page shows the same page."""
    rows, page = await fetch_page(
        request, LIST_QUERY, BY_CREATED_AT, queries.instances.list_visible_instances,
        organization_id=principal.organization_id, instance_id=None,
    )
    ids = [r["id"] for r in rows[: page.limit]]
    async with request.app[state.DB].acquire() as conn:
        volumes = group_by_instance(
            await fetch_all(queries.instance_volumes.list_volumes_of_instances(conn, instance_ids=ids))
        )
    return page_body(rows, page, BY_CREATED_AT.of, lambda r: instance_summary(r, volumes.get(str(r["id"]), [])))


async def get_instance(request: web.Request) -> web.Response:
    principal = admin(request)
    instance_id = path_uuid(request)
    detail = await fetch_instance_detail(request.app[state.DB], instance_id, principal.organization_id)
    if detail is None:
        raise not_found("No such instance.", ErrorCode.INSTANCE_NOT_FOUND, "id")
    return json_response(detail)


async def terminate_instance(request: web.Request) -> web.Response:
    principal = admin(request)
    return json_response(await terminate(request.app, principal, path_uuid(request)), status=202)


async def terminate(app: web.Application, principal: Principal, instance_id: str) -> dict[str, Any] | None:
    """Mark the instance terminating and wake the scheduler (404 when the principal may not see it, 409 when
    it is terminated already); its detail after. The console's terminate button calls this too."""
    pool = app[state.DB]
    async with transaction(pool) as conn:
        row = await queries.instances.lock_visible_instance(
            conn, instance_id=instance_id, organization_id=principal.organization_id
        )
        if row is None:
            raise not_found("No such instance.", ErrorCode.INSTANCE_NOT_FOUND, "id")
        action = termination_for(row["status"])
        if action is Termination.CONFLICT:
            raise ApiError(409, "The instance is already terminated.", ErrorCode.INSTANCE_TERMINATED, "id")
        if action is Termination.REQUEST:
            log.info("termination requested", extra={"instance_id": instance_id, "previous_status": row["status"]})
            await queries.instances.mark_instance_terminating(conn, instance_id=instance_id)
            await queries.action_logs.insert_api_action_log(
                conn,
                instance_id=instance_id,
                action_type=ActionType.REQUEST_TERMINATE,
                metadata=dumps({"api_key_id": principal.key_id, "previous_status": row["status"]}).decode(),
            )
    redis, settings = app[state.REDIS], app[state.SETTINGS]
    await notify.send_scheduler_command(redis, settings, redis_keys.SchedulerCommand.TERMINATE, instance_id)
    # A terminating instance leaves every gateway's routing table now, not at its next refresh.
    await notify.publish_change(redis, settings, redis_keys.WORKERS_CHANGED, instance_id)
    return await fetch_instance_detail(pool, instance_id, principal.organization_id)
