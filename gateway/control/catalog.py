"""GET /providers, /zones, /instance_types: the clouds, their zones and GPU types (read by any admin key).

Instance types carry their availability in every zone they are offered in.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import state
from gateway.control.access import admin
from gateway.control.pagination import PAGE_PARAMS, page_body, page_from
from gateway.control.responses import json_response
from gateway.control.validation import FieldSpec, check_query
from sql.queries import fetch_all, queries

PROVIDERS_QUERY = {**PAGE_PARAMS}
ZONES_QUERY = {
    "provider": FieldSpec("str", description="provider id or code"),
    "is_active": FieldSpec("bool"),
    **PAGE_PARAMS,
}
INSTANCE_TYPES_QUERY = {
    "provider": FieldSpec("str", description="provider id or code"),
    "zone": FieldSpec("str", description="zone id or code: only types offered there"),
    "is_active": FieldSpec("bool"),
    **PAGE_PARAMS,
}


def _viewer(kind: str) -> Any:
    return lambda row: {"object": kind, **row}


async def list_providers(request: web.Request) -> web.Response:
    admin(request)
    params = check_query(request.query, PROVIDERS_QUERY)
    page = page_from(params, ("str",))
    async with request.app[state.DB].acquire() as conn:
        rows = await fetch_all(queries.catalog.list_catalog_providers(
            conn, limit=page.limit + 1, **page.key_params("code")
        ))
    return json_response(page_body(rows, page, lambda r: (r["code"],), _viewer("provider")))


async def list_zones(request: web.Request) -> web.Response:
    admin(request)
    params = check_query(request.query, ZONES_QUERY)
    page = page_from(params, ("str", "str"))
    async with request.app[state.DB].acquire() as conn:
        rows = await fetch_all(queries.catalog.list_catalog_zones(
            conn, provider=params.get("provider"), is_active=params.get("is_active"), limit=page.limit + 1,
            **page.key_params("provider_code", "code"),
        ))
    return json_response(page_body(rows, page, lambda r: (r["provider_code"], r["code"]), _viewer("zone")))


async def list_instance_types(request: web.Request) -> web.Response:
    admin(request)
    params = check_query(request.query, INSTANCE_TYPES_QUERY)
    page = page_from(params, ("str", "str"))
    async with request.app[state.DB].acquire() as conn:
        rows = await fetch_all(queries.catalog.list_catalog_instance_types(
            conn, provider=params.get("provider"), zone=params.get("zone"), is_active=params.get("is_active"),
            limit=page.limit + 1, **page.key_params("provider_code", "code"),
        ))
    return json_response(page_body(rows, page, lambda r: (r["provider_code"], r["code"]), _viewer("instance_type")))
