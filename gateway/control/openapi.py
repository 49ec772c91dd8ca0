"""GET /openapi.json: the OpenAPI 3.1 document of every route the gateway serves.

Request bodies and query parameters of the control API are generated from the same `FieldSpec`s the
handlers enforce; a test checks that every route registered on the app is described and that the
document validates. The document is public: it holds no secrets and clients need it before they
have a key.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.control import (
    action_logs,
    api_keys,
    cloud_catalog,
    deployments,
    heartbeat,
    instances,
    models,
    offerings,
    organizations,
    usage_report,
)
from gateway.control.heartbeat import TELEMETRY_FIELDS
from gateway.control.input_validation import TEXT_PATTERN, Spec, body_schema, query_parameters
from gateway.control.placement import IDEMPOTENCY_KEY
from gateway.control.responses import dumps
from gateway.error_codes import ErrorCode
from gateway.errors import Handler
from inventiv.action_types import ActionType
from inventiv.statuses import InstanceStatus, WorkerStatus
from worker.engines import EngineName

Schema = dict[str, Any]

_ERRORS = {
    400: "Malformed input; `error.param` names the field.",
    401: "Missing, invalid or revoked key.",
    403: "The key lacks the scope or the organization for this.",
    404: "Not found.",
    408: "The request body did not arrive within INVENTIV_BODY_TIMEOUT_S.",
    409: "Conflicts with the current state.",
    413: "Request body too large.",
    429: "A rate limit (with Retry-After and x-ratelimit-* headers) or a deployment quota refused it.",
    502: "The worker failed, or answered something that is not HTTP or not JSON.",
    503: "No ready worker for the model, the gateway is draining, or the database is unavailable.",
    504: "The worker did not answer in time.",
}
_ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}


# Schema helpers ----------------------------------------------------------------------------------

_SCALARS: dict[str, Schema] = {
    "uuid": {"type": "string", "format": "uuid"},
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "num": {"type": "number"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "object": {"type": "object"},
}


def _t(kind: str) -> Schema:
    """A scalar schema from a short name; a trailing `?` makes it nullable."""
    nullable = kind.endswith("?")
    schema = dict(_SCALARS[kind.rstrip("?")])
    if nullable:
        schema["type"] = [schema["type"], "null"]
    return schema


def _enum(values: type[enum.StrEnum]) -> Schema:
    """A string that is one of the enum's values: the document lists the members the code uses."""
    return {"type": "string", "enum": [member.value for member in values]}


def _described(kind: str, description: str) -> Schema:
    return _t(kind) | {"description": description}


def _object(required: bool = True, /, **fields: str | Schema) -> Schema:
    props = {name: _t(f) if isinstance(f, str) else f for name, f in fields.items()}
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(props)
    return schema


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _list_of(name: str) -> Schema:
    return _object(
        object={"type": "string", "const": "list"},
        data={"type": "array", "items": _ref(name)},
        has_more="bool",
        next_cursor="str?",
    )


def _array(kind: str | Schema) -> Schema:
    return {"type": "array", "items": _t(kind) if isinstance(kind, str) else kind}


def _with_defaults(schema: Schema, defaults: dict[str, Any]) -> Schema:
    """A body schema whose optional properties show what their absence means."""
    for name, value in defaults.items():
        schema["properties"][name]["default"] = value
    return schema


# Operations --------------------------------------------------------------------------------------


def _op(
    tag: str,
    summary: str,
    ok: tuple[int, Schema | None],
    *,
    query: Spec | None = None,
    body: Schema | None = None,
    errors: tuple[int, ...] = (400, 401, 403),
    security: str | None = "apiKey",
    path_id: bool = False,
) -> Schema:
    status, schema = ok
    op: Schema = {"tags": [tag], "summary": summary, "responses": {}}
    params = ([_ID_PARAM] if path_id else []) + (query_parameters(query) if query else [])
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        # Any body past INVENTIV_MAX_BODY_BYTES is refused before its handler runs.
        errors = tuple(sorted({*errors, 413}))
    response: Schema = {"description": "OK" if status < 300 else "Accepted"}
    if schema is not None:
        response["content"] = {"application/json": {"schema": schema}}
    op["responses"][str(status)] = response
    for code in errors:
        op["responses"][str(code)] = {"$ref": f"#/components/responses/Error{code}"}
    if security == "apiKey":
        # A browser signed in to the console sends its session cookie instead (CSRF header on writes).
        op["security"] = [{security: []}, {"consoleSession": []}]
    elif security is not None:
        op["security"] = [{security: []}]
    return op


@dataclass(frozen=True, slots=True)
class Route:
    """A control API route with its OpenAPI operation: the app serves and the document describes this one
    table, so no route is served undescribed or described but not served."""

    method: str
    path: str
    handler: Handler
    operation: Schema


def _list_route(path: str, handler: Handler, tag: str, summary: str, item: str, query: Spec) -> Route:
    """A paged list endpoint: GET with filters and limit/cursor, answering a list envelope of `item`."""
    return Route("GET", path, handler, _op(tag, summary, (200, _list_of(item)), query=query))


@functools.cache
def control_routes() -> tuple[Route, ...]:
    mine = (400, 401, 403, 404)
    return (
        Route("POST", "/deployments", deployments.create_deployment, _op(
            "deployments", "Ask for a GPU instance serving a model", (202, _ref("InstanceDetail")),
            body=_with_defaults(body_schema(deployments.BODY), deployments.DEFAULTS),
            errors=(400, 401, 403, 404, 409, 429),
        ) | {"parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                             "schema": {"type": "string", "pattern": f"^{IDEMPOTENCY_KEY.pattern}$"},
                             "description": "repeating a key returns the first instance"}]}),
        _list_route("/instances", instances.list_instances, "instances", "List instances with their storage summary",
                    "Instance", instances.LIST_QUERY),
        Route("GET", "/instances/{id}", instances.get_instance, _op(
            "instances", "One instance with every tracked volume", (200, _ref("InstanceDetail")),
            errors=mine, path_id=True)),
        Route("DELETE", "/instances/{id}", instances.terminate_instance, _op(
            "instances", "Terminate an instance", (202, _ref("InstanceDetail")),
            errors=(400, 401, 403, 404, 409), path_id=True)),
        _list_route("/action_logs", action_logs.list_action_logs, "action_logs", "Action logs, newest first",
                    "ActionLog", action_logs.LIST_QUERY),
        _list_route("/api_keys", api_keys.list_keys, "api_keys",
                    "The organization's API keys (never the keys themselves)", "ApiKey", api_keys.LIST_QUERY),
        Route("POST", "/api_keys", api_keys.create_key, _op(
            "api_keys", "Create an API key; the key is shown once", (201, _ref("CreatedApiKey")),
            body=body_schema(api_keys.BODY))),
        Route("DELETE", "/api_keys/{id}", api_keys.revoke_key, _op(
            "api_keys", "Revoke an API key", (200, _ref("ApiKey")), errors=mine, path_id=True)),
        Route("PATCH", "/api_keys/{id}", api_keys.set_key_limits, _op(
            "api_keys", "Set or clear (null) the key's rate limits and fail mode", (200, _ref("ApiKey")),
            body=body_schema(api_keys.LIMITS_BODY, non_empty=True), errors=mine, path_id=True)),
        _list_route("/organizations", organizations.list_organizations, "organizations",
                    "Organizations: every one for a platform admin, else the key's own", "Organization",
                    organizations.LIST_QUERY),
        Route("POST", "/organizations", organizations.create_organization, _op(
            "organizations", "Create an organization (platform admins)", (201, _ref("OrganizationDetail")),
            body=body_schema(organizations.CREATE_BODY), errors=(400, 401, 403, 409))),
        Route("GET", "/organizations/{id}", organizations.get_organization, _op(
            "organizations", "One organization with its limits, quotas and their current use",
            (200, _ref("OrganizationDetail")), errors=mine, path_id=True)),
        Route("PATCH", "/organizations/{id}", organizations.update_organization, _op(
            "organizations", "Change an organization's name, limits or quotas (platform admins; null: unlimited)",
            (200, _ref("OrganizationDetail")), body=body_schema(organizations.UPDATE_BODY, non_empty=True), errors=mine,
            path_id=True)),
        _list_route("/providers", cloud_catalog.list_providers, "catalog", "Cloud providers", "Provider",
                    cloud_catalog.PROVIDERS_QUERY),
        _list_route("/zones", cloud_catalog.list_zones, "catalog", "Zones", "Zone", cloud_catalog.ZONES_QUERY),
        _list_route("/instance_types", cloud_catalog.list_instance_types, "catalog",
                    "Instance types with their availability by zone", "InstanceType",
                    cloud_catalog.INSTANCE_TYPES_QUERY),
        _list_route("/models", models.list_models, "catalog", "Models", "Model", models.LIST_QUERY),
        Route("POST", "/models", models.create_model, _op(
            "catalog", "Add a model", (201, _ref("Model")), body=body_schema(models.CREATE_BODY),
            errors=(400, 401, 403, 409))),
        Route("PATCH", "/models/{id}", models.update_model, _op(
            "catalog", "Change a model (activate, deactivate, data_volume_gb)", (200, _ref("Model")),
            body=body_schema(models.UPDATE_BODY, non_empty=True), errors=mine, path_id=True)),
        _list_route("/offerings", offerings.list_offerings, "catalog", "Offerings", "Offering", offerings.LIST_QUERY),
        Route("POST", "/offerings", offerings.create_offering, _op(
            "catalog", "Publish a model as org_slug/model_code", (201, _ref("Offering")),
            body=body_schema(offerings.CREATE_BODY), errors=(400, 401, 403, 404, 409))),
        Route("PATCH", "/offerings/{id}", offerings.update_offering, _op(
            "catalog", "Change an offering", (200, _ref("Offering")),
            body=body_schema(offerings.UPDATE_BODY, non_empty=True), errors=mine, path_id=True)),
        Route("GET", "/usage", usage_report.get_usage, _op(
            "usage", "Usage sums of an organization", (200, _ref("UsageReport")), query=usage_report.QUERY)),
        Route("POST", "/internal/workers/heartbeat", heartbeat.record_heartbeat, _op(
            "workers", "A worker agent reports its state", (200, _ref("WorkerHeartbeat")),
            body=body_schema(heartbeat.BODY), errors=(400, 401, 409), security="workerToken")),
        Route("GET", "/openapi.json", openapi_json, _op(
            "meta", "This document", (200, {"type": "object"}), errors=(), security=None)),
    )


def _control_paths() -> dict[str, Schema]:
    paths: dict[str, Schema] = {}
    for route in control_routes():
        paths.setdefault(route.path, {})[route.method.lower()] = route.operation
    return paths


def _sse_or_json(schema: Schema) -> Schema:
    return {
        "description": "A JSON body, or with `stream: true` server-sent events of chunks ending in `data: [DONE]`"
                       " (a stream the worker cuts ends with an error event instead)",
        "content": {"application/json": {"schema": schema}, "text/event-stream": {"schema": {"type": "string"}}},
    }


def _inference(summary: str, request: str, response: Schema) -> Schema:
    op = _op("inference", summary, (200, None), body=_ref(request),
             errors=(400, 401, 403, 404, 408, 413, 429, 502, 503, 504))
    op["responses"]["200"] = response
    return op


def _data_plane_paths() -> dict[str, Schema]:
    plain = {"content": {"text/plain": {"schema": {"type": "string"}}}}
    status = {"content": {"application/json": {"schema": _object(status="str")}}}
    return {
        "/v1/chat/completions": {"post": _inference(
            "OpenAI chat completions, proxied to a ready worker", "ChatCompletionRequest",
            _sse_or_json(_ref("ChatCompletion")))},
        "/v1/completions": {"post": _inference(
            "OpenAI text completions, proxied to a ready worker", "CompletionRequest",
            _sse_or_json(_ref("Completion")))},
        "/v1/embeddings": {"post": _inference(
            "OpenAI embeddings, proxied to a ready worker", "EmbeddingRequest",
            {"description": "OK", "content": {"application/json": {"schema": _ref("EmbeddingList")}}})},
        "/v1/models": {"get": _op("inference", "Models this key can use", (200, _ref("ModelList")),
                                  errors=(401,))},
        "/healthz": {"get": _op("meta", "Liveness", (200, None), errors=(), security=None)
                     | {"responses": {"200": {"description": "alive"} | status}}},
        "/readyz": {"get": _op("meta", "Readiness: caches loaded and not draining", (200, None), errors=(),
                               security=None)
                    | {"responses": {"200": {"description": "ready"} | status,
                                     "503": {"description": "loading or draining"} | status}}},
        "/metrics": {"get": _op("meta", "Prometheus metrics", (200, None), errors=(), security=None)
                     | {"responses": {"200": {"description": "Prometheus text format"} | plain}}},
    }


# Components --------------------------------------------------------------------------------------

# What the API's data_volume_gb values mean, the same in requests (see the FieldSpecs) and responses.
_INSTANCE_DATA_VOLUME = _described(
    "int?", "data volume size in GB. null: to be sized by the scheduler, which records the size here when it "
    "creates the server; 0: no data volume.",
)
_ENGINE = _t("str") | {"enum": [e.value for e in EngineName],
                       "description": "the inference engine serving the model (worker/engines.py)"}
_TELEMETRY = {
    "type": ["object", "null"],
    "description": "what the worker's agent last reported: GPU count, mean utilisation and memory, data volume usage",
    "properties": {name: {"type": ["integer", "null"]} for name in TELEMETRY_FIELDS},
}
_MODEL_DATA_VOLUME = _described(
    "int?", "data volume size in GB for new instances of this model whose deployment sets none. null: sized by "
    "the scheduler (the provider's default, else an estimate from parameter_count); 0: no data volume.",
)


def _resource_schemas() -> dict[str, Schema]:
    storage = _object(
        id="uuid", provider_volume_id="str", name="str?", volume_type="str", size_bytes="int?", size_gb="int?",
        slot="str?", is_boot="bool", delete_on_terminate="bool", created_at="datetime", attached_at="datetime?",
        detached_at="datetime?", deleted_at="datetime?",
    )
    instance = _object(
        object={"type": "string", "const": "instance"}, id="uuid", status=_enum(InstanceStatus),
        organization_id="uuid?", provider_id="uuid", provider_code="str", zone_id="uuid", zone_code="str",
        instance_type_id="uuid", instance_type_code="str", model_id="uuid?", model="str?", provider_instance_id="str?",
        provider_instance_name="str?", ip_address="str?", worker_port="int?", worker_url="str?",
        worker_status=_enum(WorkerStatus), worker_model_id="str?", worker_queue_depth="int",
        worker_last_heartbeat_at="datetime?", worker_consecutive_failures="int", engine=_ENGINE,
        agent_heartbeat_at="datetime?",
        worker_telemetry=_TELEMETRY, data_volume_gb=_INSTANCE_DATA_VOLUME,
        data_volume_delete_on_terminate="bool",
        replace_on_failure="bool", replaces_instance_id="uuid?",
        error_code="str?", error_message="str?",
        provisioning_deadline_at="datetime?", created_at="datetime", updated_at="datetime", ready_at="datetime?",
        terminating_at="datetime?", terminated_at="datetime?", storage_count="int",
        storage_sizes_gb=_array("int?"),
    )
    api_key = _object(
        object={"type": "string", "const": "api_key"}, id="uuid", organization_id="uuid", name="str",
        key_prefix="str", scopes=_array("str"), created_at="datetime", last_used_at="datetime?",
        revoked_at="datetime?", requests_per_minute="int?", tokens_per_minute="int?", concurrent_requests="int?",
        limits_fail_mode=_t("str") | {"enum": ["open", "closed"]},
    )
    organization = _object(
        object={"type": "string", "const": "organization"}, id="uuid", slug="str", name="str", is_platform="bool",
        requests_per_minute="int?", tokens_per_minute="int?", concurrent_requests="int?", max_instances="int?",
        max_gpus="int?", monthly_budget="num?", created_at="datetime", updated_at="datetime",
    )
    return {
        "Storage": storage,
        "Instance": instance,
        "InstanceDetail": {"allOf": [_ref("Instance"), _object(storages={"type": "array", "items": _ref("Storage")})]},
        "ActionLog": _object(
            object="str", id="uuid", instance_id="uuid?", action_type=_enum(ActionType), component="str", status="str",
            error_code="str?", error_message="str?", metadata="object", duration_ms="int?", created_at="datetime",
            completed_at="datetime?",
        ),
        "ApiKey": api_key,
        "Organization": organization,
        "OrganizationDetail": {"allOf": [_ref("Organization"), _object(
            usage=_object(live_instances="int", live_gpus="int", month_spend="num"))]},
        "CreatedApiKey": {"allOf": [_ref("ApiKey"), _object(key="str")]},
        "Provider": _object(object="str", id="uuid", code="str", name="str", is_active="bool",
                            created_at="datetime", worker_data_volume_gb_default="int?"),
        "Zone": _object(object="str", id="uuid", provider_id="uuid", provider_code="str", code="str", name="str",
                        is_active="bool", created_at="datetime"),
        "InstanceType": _object(
            object="str", id="uuid", provider_id="uuid", provider_code="str", code="str", name="str",
            gpu_count="int", gpu_model="str?", vram_gb_per_gpu="int", cpu_count="int", ram_gb="int",
            cost_per_hour="num", worker_port="int", allocation_params="object", is_active="bool",
            created_at="datetime",
            zones=_array(_object(zone_id="uuid", zone_code="str", is_available="bool")),
        ),
        "Model": _object(object="str", id="uuid", name="str", hf_repo_id="str", is_active="bool",
                         parameter_count="int?", context_length="int?",
                         data_volume_gb=_MODEL_DATA_VOLUME,
                         created_at="datetime", updated_at="datetime"),
        "Offering": _object(
            object="str", id="uuid", organization_id="uuid", organization_slug="str", model_id="uuid",
            model_hf_repo_id="str", model_code="str", name="str", visibility="str", is_active="bool",
            created_at="datetime", updated_at="datetime", granted_organization_ids=_array("uuid"),
        ),
        "UsageReport": _object(
            object="str", organization_id="uuid", group_by="str",
            data=_array(_object(
                False, day="date", model_id="uuid?", model="str", instance_id="uuid?", api_key_id="uuid?",
                api_key_name="str?", requests="int",
                successful_requests="int", prompt_tokens="int", completion_tokens="int", total_tokens="int",
            )),
            totals=_object(requests="int", successful_requests="int", prompt_tokens="int",
                           completion_tokens="int", total_tokens="int"),
            **{"from": "datetime", "to": "datetime"},
        ),
        "WorkerHeartbeat": _object(
            object="str", instance_id="uuid", worker_status=_enum(WorkerStatus), worker_model_id="str?",
            worker_queue_depth="int", worker_last_heartbeat_at="datetime",
        ),
    }


def _openai_schemas() -> dict[str, Schema]:
    # What gateway/request_body.py accepts as a model name: text that is not blank.
    model: Schema = {"type": "string", "minLength": 1, "pattern": TEXT_PATTERN}
    stream_options = _object(False, include_usage="bool")
    usage_schema = _object(False, prompt_tokens="int", completion_tokens="int", total_tokens="int")
    text_or_tokens: Schema = {"oneOf": [_t("str"), _array("str"), _array("int"), _array(_array("int"))]}
    extra = {"additionalProperties": True}
    return {
        "ChatMessage": _object(False, role="str", content={"oneOf": [_t("str"), _array("object"), {"type": "null"}]})
        | {"required": ["role"]},
        "ChatCompletionRequest": _object(
            False, model=model, messages={"type": "array", "items": _ref("ChatMessage")}, stream="bool",
            stream_options=stream_options, max_tokens="int?", temperature="num?", top_p="num?", n="int?",
            stop={"oneOf": [_t("str"), _array("str"), {"type": "null"}]}, user="str",
        ) | {"required": ["model", "messages"]} | extra,
        "CompletionRequest": _object(
            False, model=model, prompt=text_or_tokens, stream="bool", stream_options=stream_options,
            max_tokens="int?", temperature="num?", top_p="num?", n="int?", user="str",
        ) | {"required": ["model", "prompt"]} | extra,
        "EmbeddingRequest": _object(False, model=model, input=text_or_tokens, encoding_format="str", user="str")
        | {"required": ["model", "input"]} | extra,
        "Usage": usage_schema,
        "ChatCompletion": _object(
            False, id="str", object="str", created="int", model="str", usage=_ref("Usage"),
            choices=_array(_object(False, index="int", message=_ref("ChatMessage"), finish_reason="str?")),
        ) | {"required": ["id", "object", "created", "model", "choices"]},
        "Completion": _object(
            False, id="str", object="str", created="int", model="str", usage=_ref("Usage"),
            choices=_array(_object(False, index="int", text="str", finish_reason="str?")),
        ) | {"required": ["id", "object", "created", "model", "choices"]},
        "EmbeddingList": _object(
            object="str", model="str", usage=_ref("Usage"),
            data=_array(_object(object="str", index="int",
                                embedding={"oneOf": [_array("num"), _t("str")]})),
        ),
        "ModelList": _object(object="str", data=_array(_object(id="str", object="str", created="int", owned_by="str"))),
    }


def _components() -> Schema:
    error = _object(error=_object(False, message="str", type="str", code=_enum(ErrorCode), param="str?")
                    | {"required": ["message", "type", "code"]})
    return {
        "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key (`ik_...`); the control "
                       "API needs one with the admin scope."},
            "workerToken": {"type": "http", "scheme": "bearer",
                            "description": "The per-instance worker token issued at provisioning."},
            "consoleSession": {"type": "apiKey", "in": "cookie", "name": "inventiv_session",
                               "description": "The console's session cookie; POST, PATCH and DELETE also need "
                               "the session's CSRF token in the `X-CSRF-Token` header."},
        },
        "schemas": {"Error": error, **_resource_schemas(), **_openai_schemas()},
        "responses": {
            f"Error{code}": {"description": text, "content": {"application/json": {"schema": _ref("Error")}}}
            for code, text in _ERRORS.items()
        },
    }


@functools.cache
def document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Inventiv gateway",
            "version": "0.1.0",
            "description": "OpenAI-compatible inference (`/v1`) and the control API of the GPU fleet.",
        },
        "paths": {**_data_plane_paths(), **_control_paths()},
        "components": _components(),
    }


@functools.cache
def _encoded() -> bytes:
    return dumps(document())


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_encoded(), content_type="application/json")
