"""GET /offerings, POST /offerings, PATCH /offerings/{id}: models published as `org_slug/model_code`.

Every admin key reads every offering; an organization's admin keys create and change only its own.
`granted_organization_ids` is the full set of other organizations allowed to use a private offering.
"""

from __future__ import annotations

from typing import Any

import psycopg2.errors
from aiohttp import web

from gateway import state
from gateway.auth import Principal
from gateway.control.access import admin, own_organization
from gateway.control.input_validation import FieldSpec, check_body, path_uuid, read_json_object
from gateway.control.pagination import PAGE_PARAMS, Keyset, fetch_page, page_body
from gateway.control.responses import json_response
from gateway.error_codes import ErrorCode
from gateway.errors import ApiError, bad_request, not_found
from sql.pool import transaction
from sql.queries import fetch_all, queries

VISIBILITIES = ("public", "private")
# The schema's CHECK on offerings.model_code, enforced here first so a bad code is a 400, not a 500.
MODEL_CODE = r"[A-Za-z0-9][A-Za-z0-9._-]*"

LIST_QUERY = {
    "organization_id": FieldSpec("uuid"),
    "model_id": FieldSpec("uuid"),
    "is_active": FieldSpec("bool"),
    "visibility": FieldSpec("str", choices=VISIBILITIES),
    **PAGE_PARAMS,
}
LIST_ORDER = Keyset(("organization_slug", "str"), ("model_code", "str"))
_GRANTS = FieldSpec("uuid_list", description="organizations allowed to use a private offering (the full set)")
CREATE_BODY = {
    "model_id": FieldSpec("uuid", required=True),
    "model_code": FieldSpec("str", required=True, max_length=100, pattern=MODEL_CODE),
    "visibility": FieldSpec("str", choices=VISIBILITIES, description="default private"),
    "is_active": FieldSpec("bool"),
    "organization_id": FieldSpec("uuid", description="defaults to the calling key's organization"),
    "granted_organization_ids": _GRANTS,
}
UPDATE_BODY = {
    "is_active": FieldSpec("bool"),
    "visibility": FieldSpec("str", choices=VISIBILITIES),
    "granted_organization_ids": _GRANTS,
}


def _view(row: dict[str, Any]) -> dict[str, Any]:
    return {"object": "offering", **row}


async def list_offerings(request: web.Request) -> web.Response:
    admin(request)
    rows, page = await fetch_page(
        request, LIST_QUERY, LIST_ORDER, queries.catalog.list_catalog_offerings, offering_id=None
    )
    return json_response(page_body(rows, page, LIST_ORDER.of, _view))


async def create_offering(request: web.Request) -> web.Response:
    principal = admin(request)
    body = check_body(await read_json_object(request), CREATE_BODY)
    organization_id = own_organization(principal, body.get("organization_id"))
    try:
        async with transaction(request.app[state.DB]) as conn:
            if await queries.catalog.get_catalog_model(conn, model_id=body["model_id"]) is None:
                raise not_found("No such model.", ErrorCode.MODEL_NOT_FOUND, "model_id")
            offering_id = await queries.catalog.insert_catalog_offering(
                conn,
                organization_id=organization_id,
                model_id=body["model_id"],
                model_code=body["model_code"],
                visibility=body.get("visibility", "private"),
                is_active=body.get("is_active", True),
            )
            if offering_id is None:
                raise ApiError(409, f"This organization already offers a model as {body['model_code']}.",
                               ErrorCode.OFFERING_EXISTS, "model_code")
            await _replace_grants(conn, offering_id, body)
            row = await _get_offering(conn, offering_id)
    except psycopg2.errors.ForeignKeyViolation:
        raise _unknown_grantee() from None
    return json_response(_view(row), status=201)


async def update_offering(request: web.Request) -> web.Response:
    principal = admin(request)
    offering_id = path_uuid(request)
    body = check_body(await read_json_object(request), UPDATE_BODY)
    if not body:
        raise bad_request("Send at least one field to change.", code=ErrorCode.EMPTY_UPDATE)
    try:
        async with transaction(request.app[state.DB]) as conn:
            await _check_owner(conn, offering_id, principal)
            await queries.catalog.update_catalog_offering(
                conn, offering_id=offering_id, is_active=body.get("is_active"), visibility=body.get("visibility")
            )
            await _replace_grants(conn, offering_id, body)
            row = await _get_offering(conn, offering_id)
    except psycopg2.errors.ForeignKeyViolation:
        raise _unknown_grantee() from None
    return json_response(_view(row))


async def _get_offering(conn: Any, offering_id: str) -> dict[str, Any]:
    """The offering as the list shows it (the list query narrowed to one id); 404 when there is none."""
    rows = await fetch_all(queries.catalog.list_catalog_offerings(
        conn, offering_id=offering_id, organization_id=None, model_id=None, is_active=None, visibility=None,
        after_organization_slug=None, after_model_code=None, limit=1,
    ))
    if not rows:
        raise not_found("No such offering.", ErrorCode.OFFERING_NOT_FOUND, "id")
    return rows[0]


async def _check_owner(conn: Any, offering_id: str, principal: Principal) -> None:
    row = await _get_offering(conn, offering_id)
    if str(row["organization_id"]) != principal.organization_id:
        raise ApiError(403, "This API key can only change its own organization's offerings.",
                       ErrorCode.FORBIDDEN_ORGANIZATION, "id")


async def _replace_grants(conn: Any, offering_id: str, body: dict[str, Any]) -> None:
    if "granted_organization_ids" in body:
        await queries.catalog.replace_offering_grants(
            conn, offering_id=offering_id, organization_ids=body["granted_organization_ids"]
        )


def _unknown_grantee() -> ApiError:
    return bad_request("'granted_organization_ids' names an organization that does not exist.",
                       "granted_organization_ids", ErrorCode.ORGANIZATION_NOT_FOUND)
