"""GET /usage: sums over `finops.inference_usage` for one organization, by day, model or instance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway import state
from gateway.auth import Principal
from gateway.control.access import admin, own_organization
from gateway.control.input_validation import FieldSpec, check_query
from gateway.control.responses import json_response
from gateway.error_codes import ErrorCode
from gateway.errors import bad_request
from sql.queries import fetch_all, queries

# Each grouping's key columns: the one usage query returns them all, NULL outside the grouping asked for.
GROUP_KEYS = {
    "day": ("day",), "model": ("model_id", "model"), "instance": ("instance_id",),
    "key": ("api_key_id", "api_key_name"),
}
GROUPINGS = tuple(GROUP_KEYS)
_ALL_KEYS = frozenset(key for keys in GROUP_KEYS.values() for key in keys)
# Without `from`, the last 30 days: a month is what an invoice covers.
DEFAULT_WINDOW = timedelta(days=30)
# A bound on one query's scan; longer reports are several requests.
MAX_WINDOW = timedelta(days=366)

QUERY = {
    "organization_id": FieldSpec("uuid", description="defaults to the calling key's organization"),
    "model": FieldSpec("str", description="model name as requested, or model id"),
    "from": FieldSpec("datetime", description="inclusive; default: 30 days before `to`"),
    "to": FieldSpec("datetime", description="exclusive; default: now"),
    "group_by": FieldSpec("str", choices=GROUPINGS, description="default day"),
}


def usage_window(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """The [from, to) window asked for, with defaults, refused when empty or longer than a year."""
    end = end or now
    try:
        start = start or end - DEFAULT_WINDOW
    except OverflowError:
        raise bad_request("'to' is too early for the default window; send 'from' too.", "to",
                          ErrorCode.INVALID_WINDOW) from None
    if start >= end:
        raise bad_request("'from' must be before 'to'.", "from", ErrorCode.INVALID_WINDOW)
    if end - start > MAX_WINDOW:
        raise bad_request(f"The window from 'from' to 'to' must be at most {MAX_WINDOW.days} days.", "from",
                          ErrorCode.INVALID_WINDOW)
    return start, end


def grouped_rows(rows: list[dict[str, Any]], group_by: str) -> list[dict[str, Any]]:
    """The rows with only the key columns of `group_by`, and every sum."""
    drop = _ALL_KEYS.difference(GROUP_KEYS[group_by])
    return [{name: value for name, value in row.items() if name not in drop} for row in rows]


async def get_usage(request: web.Request) -> web.Response:
    principal = admin(request)
    return json_response(await usage_report(request.app, principal, check_query(request.query, QUERY)))


async def usage_report(app: web.Application, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
    """The report for query parameters already checked against QUERY. The console's usage page and CSV
    export read the same reports."""
    organization_id = own_organization(principal, params.get("organization_id"))
    start, end = usage_window(params.get("from"), params.get("to"), datetime.now(UTC))
    group_by = params.get("group_by", "day")
    async with app[state.DB].acquire() as conn:
        rows = grouped_rows(await fetch_all(queries.usage.sum_usage(
            conn, organization_id=organization_id, model=params.get("model"), from_ts=start, to_ts=end,
            group_by=group_by,
        )), group_by)
    body: dict[str, Any] = {
        "object": "usage",
        "organization_id": organization_id,
        "from": start,
        "to": end,
        "group_by": group_by,
        "data": rows,
        "totals": {name: sum(r[name] for r in rows) for name in
                   ("requests", "successful_requests", "prompt_tokens", "completion_tokens", "total_tokens")},
    }
    return body
