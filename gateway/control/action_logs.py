"""GET /action_logs: what the API and the scheduler did to instances, newest first."""

from __future__ import annotations

from aiohttp import web

from gateway import state
from gateway.control.access import admin
from gateway.control.pagination import PAGE_PARAMS, page_body, page_from
from gateway.control.responses import json_response
from gateway.control.validation import FieldSpec, check_query
from sql.queries import fetch_all, queries

LIST_QUERY = {
    "instance_id": FieldSpec("uuid"),
    "action_type": FieldSpec("str", pattern=r"[A-Z][A-Z0-9_]*", description="e.g. REQUEST_CREATE"),
    "status": FieldSpec("str", choices=("in_progress", "success", "failed")),
    "component": FieldSpec("str", choices=("api", "scheduler", "gateway")),
    **PAGE_PARAMS,
}


async def list_action_logs(request: web.Request) -> web.Response:
    principal = admin(request)
    params = check_query(request.query, LIST_QUERY)
    page = page_from(params, ("datetime", "uuid"))
    async with request.app[state.DB].acquire() as conn:
        rows = await fetch_all(queries.action_logs.list_visible_action_logs(
            conn,
            organization_id=principal.organization_id,
            instance_id=params.get("instance_id"),
            action_type=params.get("action_type"),
            status=params.get("status"),
            component=params.get("component"),
            limit=page.limit + 1,
            **page.key_params("created_at", "id"),
        ))
    return json_response(page_body(rows, page, lambda r: (r["created_at"], r["id"]), _view))


def _view(row: dict[str, object]) -> dict[str, object]:
    return {"object": "action_log", **row}
