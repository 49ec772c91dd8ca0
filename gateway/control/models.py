"""GET /models, POST /models, PATCH /models/{id}: the shared model catalog.

Deactivating a model stops new deployments of it; `data_volume_gb` (null = let the scheduler size it)
is what the scheduler gives new instances of it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import state
from gateway.control.access import admin
from gateway.control.input_validation import INT4_MAX, FieldSpec, check_body, patch_params, path_uuid, read_json_object
from gateway.control.pagination import PAGE_PARAMS, Keyset, fetch_page, page_body
from gateway.control.responses import json_response
from gateway.error_codes import ErrorCode
from gateway.errors import ApiError, bad_request, not_found
from sql.queries import queries

# Same bound as a deployment's data volume (gateway/control/deployments.py).
_DATA_VOLUME = FieldSpec(
    "int", nullable=True, minimum=0, maximum=100_000,
    description="data volume size in GB for new instances of this model whose deployment sets none. null (or absent "
    "when adding a model): sized by the scheduler (the provider's default, else an estimate from parameter_count); "
    "0: no data volume.",
)
_PARAMETERS = FieldSpec("int", nullable=True, minimum=1, maximum=10**15)
_CONTEXT = FieldSpec("int", nullable=True, minimum=1, maximum=INT4_MAX)

LIST_QUERY = {"is_active": FieldSpec("bool"), **PAGE_PARAMS}
LIST_ORDER = Keyset(("hf_repo_id", "str"))
CREATE_BODY = {
    "hf_repo_id": FieldSpec("str", required=True, pattern=r"[A-Za-z0-9][A-Za-z0-9._/-]*"),
    "name": FieldSpec("str", description="defaults to hf_repo_id"),
    "is_active": FieldSpec("bool"),
    "parameter_count": _PARAMETERS,
    "context_length": _CONTEXT,
    "data_volume_gb": _DATA_VOLUME,
}
UPDATE_BODY = {
    "name": FieldSpec("str"),
    "is_active": FieldSpec("bool"),
    "parameter_count": _PARAMETERS,
    "context_length": _CONTEXT,
    "data_volume_gb": _DATA_VOLUME,
}


def _view(row: dict[str, Any]) -> dict[str, Any]:
    return {"object": "model", **row}


def update_params(body: dict[str, Any]) -> dict[str, Any]:
    """`set_<field>` + value for each patchable field: sent fields change (null included), others stay."""
    if not body:
        raise bad_request("Send at least one field to change.", code=ErrorCode.EMPTY_UPDATE)
    return patch_params(body, UPDATE_BODY)


async def list_models(request: web.Request) -> web.Response:
    admin(request)
    rows, page = await fetch_page(request, LIST_QUERY, LIST_ORDER, queries.catalog.list_catalog_models)
    return json_response(page_body(rows, page, LIST_ORDER.of, _view))


async def create_model(request: web.Request) -> web.Response:
    admin(request)
    body = check_body(await read_json_object(request), CREATE_BODY)
    async with request.app[state.DB].acquire() as conn:
        row = await queries.catalog.insert_catalog_model(
            conn,
            name=body.get("name") or body["hf_repo_id"],
            hf_repo_id=body["hf_repo_id"],
            is_active=body.get("is_active", True),
            parameter_count=body.get("parameter_count"),
            context_length=body.get("context_length"),
            data_volume_gb=body.get("data_volume_gb"),
        )
    if row is None:
        raise ApiError(409, f"A model with hf_repo_id {body['hf_repo_id']} exists already.", ErrorCode.MODEL_EXISTS,
                       "hf_repo_id")
    return json_response(_view(row), status=201)


async def update_model(request: web.Request) -> web.Response:
    admin(request)
    model_id = path_uuid(request)
    params = update_params(check_body(await read_json_object(request), UPDATE_BODY))
    async with request.app[state.DB].acquire() as conn:
        row = await queries.catalog.update_catalog_model(conn, model_id=model_id, **params)
    if row is None:
        raise not_found("No such model.", ErrorCode.MODEL_NOT_FOUND, "id")
    return json_response(_view(row))
