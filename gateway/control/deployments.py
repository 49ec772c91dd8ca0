"""POST /deployments: ask for a GPU instance serving a model.

The instance row and its REQUEST_CREATE log are written in one transaction; only then is PROVISION
sent to the scheduler's stream. If Redis is down the request still succeeds: the row is the request,
and the scheduler's interval driver picks it up. An `Idempotency-Key` header makes retries safe.
"""

from __future__ import annotations

import logging
from typing import Any

import aiopg
from aiohttp import web

from gateway import state
from gateway.auth import Principal
from gateway.control import notify
from gateway.control.access import admin
from gateway.control.input_validation import FieldSpec, check_body, read_json_object
from gateway.control.instances import fetch_instance_detail
from gateway.control.placement import check_placement, check_replay, scoped_idempotency_key
from gateway.control.quotas import check_quotas
from gateway.control.responses import dumps, json_response
from inventiv.action_types import ActionType
from inventiv.redis_keys import SchedulerCommand
from sql.pool import transaction
from sql.queries import queries

# 100 TB: far above any GPU server's disk, far below the integer column's limit.
MAX_DATA_VOLUME_GB = 100_000

BODY = {
    "instance_type_id": FieldSpec("uuid", required=True),
    "zone_id": FieldSpec("uuid", required=True),
    "model_id": FieldSpec("uuid", required=True),
    "data_volume_gb": FieldSpec(
        "int", nullable=True, minimum=0, maximum=MAX_DATA_VOLUME_GB,
        description="data volume size in GB. null or absent: sized by the scheduler (the model's data_volume_gb, "
        "else the provider's default, else an estimate from the model's parameter count); 0: no data volume. "
        "WORKER_DATA_VOLUME_GB, when the operator sets it, overrides this.",
    ),
    "data_volume_delete_on_terminate": FieldSpec(
        "bool", description="whether terminating the instance deletes its data volume (true) or keeps it detached",
    ),
    "replace_on_failure": FieldSpec(
        "bool", description="whether an instance whose worker died (silent for WORKER_DEAD_AFTER_S) is replaced by a "
        "new one like it (at most REPLACEMENTS_PER_HOUR per chain); it is terminated either way",
    ),
}
# What an absent optional field means; the OpenAPI document shows the same values.
DEFAULTS: dict[str, Any] = {
    "data_volume_gb": None, "data_volume_delete_on_terminate": True, "replace_on_failure": False,
}  # fmt: skip

log = logging.getLogger(__name__)


async def create_deployment(request: web.Request) -> web.Response:
    principal = admin(request)
    detail, created = await deploy(
        request.app, principal, await read_json_object(request), request.headers.get("Idempotency-Key")
    )
    headers = None if created else {"Idempotent-Replayed": "true"}
    return json_response(detail, status=202, headers=headers)


async def deploy(
    app: web.Application, principal: Principal, raw: dict[str, Any], idempotency_header: str | None
) -> tuple[dict[str, Any] | None, bool]:
    """Check and record a deployment, then wake the scheduler: the instance's detail, and whether this call
    created it (False: an Idempotency-Key replay). The console's form calls this too."""
    body = {**DEFAULTS, **check_body(raw, BODY)}
    idempotency_key = scoped_idempotency_key(idempotency_header, principal.organization_id)
    pool = app[state.DB]
    instance_id, created = await _insert(pool, app[state.SETTINGS].provisioning_deadline_s,
                                         principal, body, idempotency_key)
    if created:
        ids = {name: body[name] for name in ("model_id", "instance_type_id", "zone_id")}
        log.info("deployment requested", extra={"instance_id": instance_id, **ids})
        await notify.send_scheduler_command(
            app[state.REDIS], app[state.SETTINGS], SchedulerCommand.PROVISION, instance_id
        )
    return await fetch_instance_detail(pool, instance_id, principal.organization_id), created


async def _insert(
    pool: aiopg.Pool, deadline_s: float, principal: Principal, body: dict[str, Any], idempotency_key: str | None
) -> tuple[str, bool]:
    """The instance id, and whether this call created it (False: an Idempotency-Key replay)."""
    async with transaction(pool) as conn:
        replayed = await _replayed(conn, idempotency_key, body)
        if replayed is not None:
            return replayed, False
        instance_type = await _check(conn, body)
        await check_quotas(conn, principal.organization_id, body["instance_type_id"])
        row = await queries.instances.insert_requested_instance(
            conn,
            provider_id=instance_type["provider_id"],
            zone_id=body["zone_id"],
            instance_type_id=body["instance_type_id"],
            model_id=body["model_id"],
            organization_id=principal.organization_id,
            worker_port=instance_type["worker_port"],
            data_volume_gb=body["data_volume_gb"],
            data_volume_delete_on_terminate=body["data_volume_delete_on_terminate"],
            replace_on_failure=body["replace_on_failure"],
            idempotency_key=idempotency_key,
            deadline_s=deadline_s,
        )
        if row is None:
            # A concurrent request with the same key committed first; ON CONFLICT waited for it.
            replayed = await _replayed(conn, idempotency_key, body)
            assert replayed is not None
            return replayed, False
        await queries.action_logs.insert_api_action_log(
            conn,
            instance_id=row["id"],
            action_type=ActionType.REQUEST_CREATE,
            metadata=dumps({**body, "api_key_id": principal.key_id}).decode(),
        )
        return str(row["id"]), True


async def _replayed(conn: aiopg.Connection, idempotency_key: str | None, body: dict[str, Any]) -> str | None:
    if idempotency_key is None:
        return None
    existing = await queries.instances.get_instance_request_by_idempotency_key(conn, idempotency_key=idempotency_key)
    if existing is None:
        return None
    check_replay(existing, body)
    return str(existing["id"])


async def _check(conn: aiopg.Connection, body: dict[str, Any]) -> dict[str, Any]:
    """The instance type row, once type, zone and model are known to fit together."""
    catalog = queries.catalog
    instance_type = await catalog.get_catalog_instance_type(conn, instance_type_id=body["instance_type_id"])
    zone = await catalog.get_catalog_zone(conn, zone_id=body["zone_id"])
    offer = await catalog.get_instance_type_zone_offer(
        conn, instance_type_id=body["instance_type_id"], zone_id=body["zone_id"]
    )
    model = await catalog.get_catalog_model(conn, model_id=body["model_id"])
    check_placement(instance_type, zone, offer, model)
    assert instance_type is not None
    return instance_type
