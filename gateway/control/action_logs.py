"""GET /action_logs: what the API and the scheduler did to instances, newest first."""

from __future__ import annotations

from aiohttp import web

from gateway.control.access import admin
from gateway.control.input_validation import FieldSpec
from gateway.control.pagination import BY_CREATED_AT, PAGE_PARAMS, fetch_page, page_body
from gateway.control.responses import json_response
from sql.queries import queries

LIST_QUERY = {
    "instance_id": FieldSpec("uuid"),
    "action_type": FieldSpec("str", pattern=r"[A-Z][A-Z0-9_]*", description="e.g. REQUEST_CREATE"),
    "status": FieldSpec("str", choices=("in_progress", "success", "failed")),
    "component": FieldSpec("str", choices=("api", "scheduler", "gateway")),
    **PAGE_PARAMS,
}


async def list_action_logs(request: web.Request) -> web.Response:
    principal = admin(request)
    rows, page = await fetch_page(
        request, LIST_QUERY, BY_CREATED_AT, queries.action_logs.list_visible_action_logs,
        organization_id=principal.organization_id,
    )
    return json_response(page_body(rows, page, BY_CREATED_AT.of, _view))


def _view(row: dict[str, object]) -> dict[str, object]:
    return {"object": "action_log", **row}
