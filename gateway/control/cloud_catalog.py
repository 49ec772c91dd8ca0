"""GET /providers, /zones, /instance_types: the clouds, their zones and GPU types (read by any admin key).

Instance types carry their availability in every zone they are offered in.
"""

from __future__ import annotations

from aiohttp import web

from gateway.control.access import admin
from gateway.control.input_validation import FieldSpec, Spec
from gateway.control.pagination import PAGE_PARAMS, Keyset, ListQuery, fetch_page, page_body
from gateway.control.responses import json_response
from sql.queries import queries

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
BY_CODE = Keyset(("code", "str"))
# Zones and instance types are listed by provider, then by their own code.
BY_PROVIDER_CODE = Keyset(("provider_code", "str"), ("code", "str"))


async def _list(request: web.Request, spec: Spec, keyset: Keyset, query: ListQuery, kind: str) -> web.Response:
    admin(request)
    rows, page = await fetch_page(request, spec, keyset, query)
    return json_response(page_body(rows, page, keyset.of, lambda row: {"object": kind, **row}))


async def list_providers(request: web.Request) -> web.Response:
    return await _list(request, PROVIDERS_QUERY, BY_CODE, queries.catalog.list_catalog_providers, "provider")


async def list_zones(request: web.Request) -> web.Response:
    return await _list(request, ZONES_QUERY, BY_PROVIDER_CODE, queries.catalog.list_catalog_zones, "zone")


async def list_instance_types(request: web.Request) -> web.Response:
    return await _list(
        request, INSTANCE_TYPES_QUERY, BY_PROVIDER_CODE, queries.catalog.list_catalog_instance_types, "instance_type"
    )
