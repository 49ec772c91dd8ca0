"""Console pages of the fleet: the instance list (refreshed live) and one instance with its volumes,
action-log timeline and worker health; terminate. The data comes from the control API's own reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiopg
from aiohttp import web

from gateway import state
from gateway.console.auth import signed_in
from gateway.console.cost import instance_cost
from gateway.console.render import render
from gateway.console.sessions import Session, session_principal
from gateway.control import instances
from gateway.control.input_validation import parse_uuid
from gateway.control.pagination import MAX_LIMIT
from gateway.error_codes import ErrorCode
from gateway.errors import not_found
from sql.queries import fetch_all, queries

# The timeline shows an instance's whole life; a provisioning with retries writes a few dozen steps.
TIMELINE_LIMIT = 200


async def prices(pool: aiopg.Pool) -> dict[str, Any]:
    """Instance type id -> cost per hour."""
    async with pool.acquire() as conn:
        rows = await fetch_all(queries.catalog.list_catalog_instance_types(
            conn, provider=None, zone=None, is_active=None, after_provider_code=None, after_code=None,
            limit=MAX_LIMIT,
        ))
    return {str(r["id"]): r["cost_per_hour"] for r in rows}


async def _fleet(request: web.Request, session: Session) -> dict[str, Any]:
    page = await instances.instance_page(request, session_principal(session))
    rows = page["data"]
    price = await prices(request.app[state.DB])
    now = datetime.now(UTC)
    filters = {name: request.query.get(name) or None for name in ("status", "model", "zone")}
    return {
        "instances": [{**r, "id": str(r["id"])} for r in rows],
        "costs": {str(r["id"]): instance_cost(r, price, now) for r in rows},
        "filters": filters,
        "filtered": any(filters.values()),
    }


def _query_without_blanks(request: web.Request) -> dict[str, str]:
    """The filter form sends empty fields; the list's checks read a present field as a value."""
    return {k: v for k, v in request.query.items() if v}


@signed_in
async def fleet_page(request: web.Request, session: Session) -> web.StreamResponse:
    query = _query_without_blanks(request)
    if len(query) != len(request.query):
        raise web.HTTPSeeOther(str(request.rel_url.with_query(query)))
    suffix = f"?{request.query_string}" if request.query_string else ""
    return render("fleet.html", session, statuses=instances.STATUSES, query=suffix, **await _fleet(request, session))


@signed_in
async def fleet_rows(request: web.Request, session: Session) -> web.StreamResponse:
    return render("_fleet_rows.html", session, **await _fleet(request, session))


async def _instance(request: web.Request, session: Session) -> dict[str, Any]:
    instance_id = parse_uuid(request.match_info["id"], "id")
    pool = request.app[state.DB]
    detail = await instances.fetch_instance_detail(pool, instance_id, session.organization_id)
    if detail is None:
        raise not_found("No such instance.", ErrorCode.INSTANCE_NOT_FOUND, "id")
    async with pool.acquire() as conn:
        actions = await fetch_all(queries.action_logs.list_visible_action_logs(
            conn, organization_id=session.organization_id, instance_id=instance_id, action_type=None, status=None,
            component=None, after_created_at=None, after_id=None, limit=TIMELINE_LIMIT,
        ))
    price = await prices(pool)
    return {
        "instance": {**detail, "id": str(detail["id"])},
        "actions": list(reversed(actions)),  # oldest first: the order things happened in
        "cost": instance_cost(detail, price, datetime.now(UTC)),
    }


@signed_in
async def instance_page(request: web.Request, session: Session) -> web.StreamResponse:
    return render("instance.html", session, **await _instance(request, session))


@signed_in
async def instance_panel(request: web.Request, session: Session) -> web.StreamResponse:
    return render("_instance_panel.html", session, **await _instance(request, session))


@signed_in
async def terminate(request: web.Request, session: Session) -> web.StreamResponse:
    instance_id = parse_uuid(request.match_info["id"], "id")
    await instances.terminate(request.app, session_principal(session), instance_id)
    raise web.HTTPSeeOther(f"/console/instances/{instance_id}")
