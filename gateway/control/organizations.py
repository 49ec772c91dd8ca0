"""POST /organizations, GET /organizations, GET and PATCH /organizations/{id}: tenants, their rate limits
and deployment quotas.

Who may do what (see access.py): admin keys of a platform organization (flagged `is_platform`, and the
oldest organization, the one the seed creates) create, list, read and change every organization. Any
other admin key reads its own organization, limits and quotas included, and nothing else: another
organization is a 404, as if it did not exist. Limits and quotas are the operator's controls over a
tenant, so a tenant's admin cannot change them; it can tighten its own keys' limits (PATCH /api_keys/{id}).

Rate limits are enforced by the gateway (gateway/limits.py), quotas by POST /deployments
(gateway/control/quotas.py); a change reaches every gateway process at once through the key-change
channel, and within a second through polling when Redis is down.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import state
from gateway.auth import Principal
from gateway.control import notify
from gateway.control.access import admin
from gateway.control.input_validation import INT4_MAX, FieldSpec, check_body, patch_params, path_uuid, read_json_object
from gateway.control.pagination import PAGE_PARAMS, Keyset, fetch_page, page_body
from gateway.control.quotas import spending_of
from gateway.control.responses import json_response
from gateway.error_codes import ErrorCode
from gateway.errors import ApiError, bad_request, not_found
from inventiv import redis_keys
from sql.pool import transaction
from sql.queries import fetch_all, queries

# The same fields on keys (api_keys.py) and organizations; null: unlimited.
RATE_FIELDS = {
    "requests_per_minute": FieldSpec("int", nullable=True, minimum=1, maximum=INT4_MAX,
                                     description="inference requests per calendar minute; null: unlimited"),
    "tokens_per_minute": FieldSpec("int", nullable=True, minimum=1, maximum=INT4_MAX,
                                   description="prompt + completion tokens per calendar minute; null: unlimited"),
    "concurrent_requests": FieldSpec("int", nullable=True, minimum=1, maximum=INT4_MAX,
                                     description="inference requests in flight at once; null: unlimited"),
}
# A billion in any currency is beyond any GPU bill and within numeric(12, 2).
_MAX_BUDGET = 10**9
QUOTA_FIELDS = {
    "max_instances": FieldSpec("int", nullable=True, minimum=0, maximum=INT4_MAX,
                               description="live instances at once; null: unlimited"),
    "max_gpus": FieldSpec("int", nullable=True, minimum=0, maximum=INT4_MAX,
                          description="GPUs of the live instances at once; null: unlimited"),
    "monthly_budget": FieldSpec("int", nullable=True, minimum=0, maximum=_MAX_BUDGET,
                                description="whole units of the currency of instance_types.cost_per_hour per "
                                "calendar month (UTC); null: unlimited"),
}
_IS_PLATFORM = FieldSpec("bool", description="its admin keys manage every organization")
CREATE_BODY = {
    # The column's own rule; 63 characters fit a DNS label, which slugs often become.
    "slug": FieldSpec("str", required=True, pattern=r"[a-z0-9][a-z0-9-]*", max_length=63),
    "name": FieldSpec("str", required=True),
    "is_platform": _IS_PLATFORM,
    **RATE_FIELDS,
    **QUOTA_FIELDS,
}
UPDATE_BODY = {"name": FieldSpec("str"), "is_platform": _IS_PLATFORM, **RATE_FIELDS, **QUOTA_FIELDS}
LIST_QUERY = {**PAGE_PARAMS}
LIST_ORDER = Keyset(("slug", "str"))


def _view(row: dict[str, Any]) -> dict[str, Any]:
    return {"object": "organization", **row}


def _platform(principal: Principal) -> Principal:
    if not principal.is_platform:
        raise ApiError(403, "Only admin keys of a platform organization manage organizations.",
                       ErrorCode.PLATFORM_ADMIN_REQUIRED)
    return principal


def update_params(body: dict[str, Any]) -> dict[str, Any]:
    """The update query's parameters: sent fields change (null included), others stay."""
    return patch_params(body, UPDATE_BODY)


async def create_organization(request: web.Request) -> web.Response:
    _platform(admin(request))
    body = check_body(await read_json_object(request), CREATE_BODY)
    async with transaction(request.app[state.DB]) as conn:
        row = await queries.organizations.insert_organization(
            conn, slug=body["slug"], name=body["name"], is_platform=body.get("is_platform", False)
        )
        if row is None:
            raise ApiError(409, f"An organization with slug {body['slug']} exists already.",
                           ErrorCode.ORGANIZATION_EXISTS, "slug")
        organization_id = str(row["id"])
        await queries.organizations.update_organization(conn, organization_id=organization_id, **update_params(body))
    return json_response(await _detail(request, organization_id), status=201)


async def list_organizations(request: web.Request) -> web.Response:
    principal = admin(request)
    # Not a platform admin: its own organization only.
    only = None if principal.is_platform else principal.organization_id
    rows, page = await fetch_page(request, LIST_QUERY, LIST_ORDER, queries.organizations.list_organization_details,
                                  organization_id=only)
    return json_response(page_body(rows, page, LIST_ORDER.of, _view))


async def get_organization(request: web.Request) -> web.Response:
    principal = admin(request)
    organization_id = _visible(principal, path_uuid(request))
    return json_response(await _detail(request, organization_id))


async def update_organization(request: web.Request) -> web.Response:
    principal = admin(request)
    organization_id = _visible(principal, path_uuid(request))
    _platform(principal)
    body = check_body(await read_json_object(request), UPDATE_BODY)
    if not body:
        raise bad_request("Send at least one field to change.", code=ErrorCode.EMPTY_UPDATE)
    async with request.app[state.DB].acquire() as conn:
        row = await queries.organizations.update_organization(
            conn, organization_id=organization_id, **update_params(body)
        )
    if row is None:
        raise _no_such()
    await limits_changed(request, organization_id)
    return json_response(await _detail(request, organization_id))


def _visible(principal: Principal, organization_id: str) -> str:
    if not principal.is_platform and organization_id != principal.organization_id:
        raise _no_such()
    return organization_id


def _no_such() -> ApiError:
    return not_found("No such organization.", ErrorCode.ORGANIZATION_NOT_FOUND, "id")


async def _detail(request: web.Request, organization_id: str) -> dict[str, Any]:
    """The organization with what its quotas count now: live instances, their GPUs, this month's spend."""
    async with request.app[state.DB].acquire() as conn:
        rows = await fetch_all(queries.organizations.list_organization_details(
            conn, organization_id=organization_id, after_slug=None, limit=1
        ))
        if not rows:
            raise _no_such()
        spent = await queries.organizations.get_organization_spending(
            conn, organization_id=organization_id, instance_type_id=None
        )
    spending = spending_of(spent)
    usage = {"live_instances": spending.live_instances, "live_gpus": spending.live_gpus,
             "month_spend": spending.month_spend}
    return {**_view(rows[0]), "usage": usage}


async def limits_changed(request: web.Request, subject_id: str) -> None:
    """Limits travel with the key table: reload it here now, and in every other process through Redis."""
    await request.app[state.PLANE].reload(request.app[state.DB])
    await notify.publish_change(request.app[state.REDIS], request.app[state.SETTINGS], redis_keys.KEYS_CHANGED,
                                subject_id)
