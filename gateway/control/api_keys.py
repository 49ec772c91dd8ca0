"""POST /api_keys, GET /api_keys, DELETE /api_keys/{id}, PATCH /api_keys/{id} (rate limits) for the key's
own organization.

A new key is shown once. Creating or revoking updates this process's key table at once and publishes
the key id so the other gateway processes reload theirs; they also reload every second, so a revoked
key stops working everywhere within 2 s even when Redis is down.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import state
from gateway.auth import Principal
from gateway.control import notify
from gateway.control.access import admin, own_organization
from gateway.control.input_validation import FieldSpec, check_body, patch_params, path_uuid, read_json_object
from gateway.control.organizations import RATE_FIELDS, limits_changed
from gateway.control.pagination import BY_CREATED_AT, PAGE_PARAMS, fetch_page, page_body
from gateway.control.responses import json_response
from gateway.error_codes import ErrorCode
from gateway.errors import bad_request, not_found
from gateway.limits import FAIL_MODES, KeyLimits, Rates
from inventiv import redis_keys
from sql.api_key_store import SCOPES, create_api_key, hash_key
from sql.pool import transaction
from sql.queries import queries

BODY = {
    "organization_id": FieldSpec("uuid", description="defaults to the calling key's organization"),
    "name": FieldSpec("str", required=True),
    "scopes": FieldSpec("str_list", required=True, choices=SCOPES),
}
LIST_QUERY = {**PAGE_PARAMS}
# PATCH /api_keys/{id}: the key's own rate limits (null: unlimited; its organization's apply as well).
LIMITS_BODY = {
    **RATE_FIELDS,
    "limits_fail_mode": FieldSpec("str", choices=FAIL_MODES, description="when Redis is down: 'open' serves "
                                  "the key's requests unlimited, 'closed' refuses them with 503"),
}


def _view(row: dict[str, Any]) -> dict[str, Any]:
    return {"object": "api_key", **row}


async def create_key(request: web.Request) -> web.Response:
    principal = admin(request)
    return json_response(await create(request.app, principal, await read_json_object(request)), status=201)


async def create(app: web.Application, principal: Principal, raw: dict[str, Any]) -> dict[str, Any]:
    """Check the body, store the key and make every gateway process accept it: the key's view with the key
    itself (shown once). The console's form calls this too."""
    body = check_body(raw, BODY)
    organization_id = own_organization(principal, body.get("organization_id"))
    async with transaction(app[state.DB]) as conn:
        created = await create_api_key(conn, organization_id, body["name"], body["scopes"])
    app[state.KEYS].add(hash_key(created.key), Principal(
        key_id=str(created.row["id"]),
        organization_id=organization_id,
        organization_slug=principal.organization_slug,
        scopes=frozenset(created.row["scopes"]),
        # A new key has no limits of its own; its organization's hold from the first request.
        limits=KeyLimits(Rates(), principal.limits.org, False) if principal.limits and principal.limits.org.any
        else None,
        is_platform=principal.is_platform,
    ))
    await _announce(app, str(created.row["id"]))
    return {**_view(created.row), "key": created.key}


async def list_keys(request: web.Request) -> web.Response:
    principal = admin(request)
    rows, page = await fetch_page(
        request, LIST_QUERY, BY_CREATED_AT, queries.api_keys.list_api_keys, organization_id=principal.organization_id
    )
    return json_response(page_body(rows, page, BY_CREATED_AT.of, _view))


async def revoke_key(request: web.Request) -> web.Response:
    principal = admin(request)
    return json_response(await revoke(request.app, principal, path_uuid(request)))


async def revoke(app: web.Application, principal: Principal, key_id: str) -> dict[str, Any]:
    """Revoke one of the principal's organization's keys (404 for any other) everywhere; the key's view."""
    async with transaction(app[state.DB]) as conn:
        row = await queries.api_keys.get_api_key(conn, key_id=key_id)
        if row is None or str(row["organization_id"]) != principal.organization_id:
            raise not_found("No such API key.", ErrorCode.API_KEY_NOT_FOUND, "id")
        row = await queries.api_keys.revoke_api_key(conn, key_id=key_id)
    app[state.KEYS].revoke(key_id)
    await _announce(app, key_id)
    return _view(row)


async def set_key_limits(request: web.Request) -> web.Response:
    principal = admin(request)
    key_id = path_uuid(request)
    body = check_body(await read_json_object(request), LIMITS_BODY)
    if not body:
        raise bad_request("Send at least one limit to change.", code=ErrorCode.EMPTY_UPDATE)
    params = patch_params(body, LIMITS_BODY)
    async with transaction(request.app[state.DB]) as conn:
        row = await queries.api_keys.get_api_key(conn, key_id=key_id)
        if row is None or str(row["organization_id"]) != principal.organization_id:
            raise not_found("No such API key.", ErrorCode.API_KEY_NOT_FOUND, "id")
        row = await queries.api_keys.update_api_key_limits(conn, key_id=key_id, **params)
    await limits_changed(request, key_id)
    return json_response(_view(row))



async def _announce(app: web.Application, key_id: str) -> None:
    await notify.publish_change(app[state.REDIS], app[state.SETTINGS], redis_keys.KEYS_CHANGED, key_id)
