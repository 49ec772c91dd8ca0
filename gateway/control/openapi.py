"""The OpenAPI 3.1 document of every route the gateway serves (GET /openapi.json, in routes.py).

Request bodies and query parameters of the control API are generated from the same `FieldSpec`s the
handlers enforce; a test checks that every route registered on the app is described and that the
document validates. The document is public: it holds no secrets and clients need it before they
have a key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from gateway.blank_text import TEXT_PATTERN
from gateway.control.heartbeat import TELEMETRY_FIELDS
from gateway.control.schema import Schema, array, described, enum_of, obj, operation, ref, scalar
from gateway.error_codes import ErrorCode
from inventiv.action_types import ActionType
from inventiv.statuses import InstanceStatus, WorkerStatus
from worker.engines import EngineName


class DescribedRoute(Protocol):
    """What the document needs of a control API route (routes.Route), without importing the table."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def operation(self) -> Schema: ...


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


def _control_paths(routes: Iterable[DescribedRoute]) -> dict[str, Schema]:
    paths: dict[str, Schema] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = route.operation
    return paths


def _sse_or_json(schema: Schema) -> Schema:
    return {
        "description": "A JSON body, or with `stream: true` server-sent events of chunks ending in `data: [DONE]`"
                       " (a stream the worker cuts ends with an error event instead)",
        "content": {"application/json": {"schema": schema}, "text/event-stream": {"schema": {"type": "string"}}},
    }


def _inference(summary: str, request: str, response: Schema) -> Schema:
    op = operation("inference", summary, (200, None), body=ref(request),
             errors=(400, 401, 403, 404, 408, 413, 429, 502, 503, 504))
    op["responses"]["200"] = response
    return op


def _data_plane_paths() -> dict[str, Schema]:
    plain = {"content": {"text/plain": {"schema": {"type": "string"}}}}
    status = {"content": {"application/json": {"schema": obj(status="str")}}}
    return {
        "/v1/chat/completions": {"post": _inference(
            "OpenAI chat completions, proxied to a ready worker", "ChatCompletionRequest",
            _sse_or_json(ref("ChatCompletion")))},
        "/v1/completions": {"post": _inference(
            "OpenAI text completions, proxied to a ready worker", "CompletionRequest",
            _sse_or_json(ref("Completion")))},
        "/v1/embeddings": {"post": _inference(
            "OpenAI embeddings, proxied to a ready worker", "EmbeddingRequest",
            {"description": "OK", "content": {"application/json": {"schema": ref("EmbeddingList")}}})},
        "/v1/models": {"get": operation("inference", "Models this key can use", (200, ref("ModelList")),
                                  errors=(401,))},
        "/healthz": {"get": operation("meta", "Liveness", (200, None), errors=(), security=None)
                     | {"responses": {"200": {"description": "alive"} | status}}},
        "/readyz": {"get": operation("meta", "Readiness: caches loaded and not draining", (200, None), errors=(),
                               security=None)
                    | {"responses": {"200": {"description": "ready"} | status,
                                     "503": {"description": "loading or draining"} | status}}},
        "/metrics": {"get": operation("meta", "Prometheus metrics", (200, None), errors=(), security=None)
                     | {"responses": {"200": {"description": "Prometheus text format"} | plain}}},
    }


# Components --------------------------------------------------------------------------------------

# What the API's data_volume_gb values mean, the same in requests (see the FieldSpecs) and responses.
_INSTANCE_DATA_VOLUME = described(
    "int?", "data volume size in GB. null: to be sized by the scheduler, which records the size here when it "
    "creates the server; 0: no data volume.",
)
_ENGINE = scalar("str") | {"enum": [e.value for e in EngineName],
                       "description": "the inference engine serving the model (worker/engines.py)"}
_TELEMETRY = {
    "type": ["object", "null"],
    "description": "what the worker's agent last reported: GPU count, mean utilisation and memory, data volume usage",
    "properties": {name: {"type": ["integer", "null"]} for name in TELEMETRY_FIELDS},
}
_MODEL_DATA_VOLUME = described(
    "int?", "data volume size in GB for new instances of this model whose deployment sets none. null: sized by "
    "the scheduler (the provider's default, else an estimate from parameter_count); 0: no data volume.",
)


def _resource_schemas() -> dict[str, Schema]:
    storage = obj(
        id="uuid", provider_volume_id="str", name="str?", volume_type="str", size_bytes="int?", size_gb="int?",
        slot="str?", is_boot="bool", delete_on_terminate="bool", created_at="datetime", attached_at="datetime?",
        detached_at="datetime?", deleted_at="datetime?",
    )
    instance = obj(
        object={"type": "string", "const": "instance"}, id="uuid", status=enum_of(InstanceStatus),
        organization_id="uuid?",
        provider_id="uuid", provider_code="str", zone_id="uuid", zone_code="str", instance_type_id="uuid",
        instance_type_code="str", model_id="uuid?", model="str?", provider_instance_id="str?",
        provider_instance_name="str?", ip_address="str?", worker_port="int?", worker_url="str?",
        worker_status=enum_of(WorkerStatus), worker_model_id="str?", worker_queue_depth="int",
        worker_last_heartbeat_at="datetime?",
        worker_consecutive_failures="int", engine=_ENGINE, agent_heartbeat_at="datetime?",
        worker_telemetry=_TELEMETRY, data_volume_gb=_INSTANCE_DATA_VOLUME,
        data_volume_delete_on_terminate="bool",
        replace_on_failure="bool", replaces_instance_id="uuid?",
        error_code="str?", error_message="str?",
        provisioning_deadline_at="datetime?", created_at="datetime", updated_at="datetime", ready_at="datetime?",
        terminating_at="datetime?", terminated_at="datetime?", storage_count="int",
        storage_sizes_gb=array("int?"),
    )
    api_key = obj(
        object={"type": "string", "const": "api_key"}, id="uuid", organization_id="uuid", name="str",
        key_prefix="str", scopes=array("str"), created_at="datetime", last_used_at="datetime?",
        revoked_at="datetime?", requests_per_minute="int?", tokens_per_minute="int?", concurrent_requests="int?",
        limits_fail_mode=scalar("str") | {"enum": ["open", "closed"]},
    )
    organization = obj(
        object={"type": "string", "const": "organization"}, id="uuid", slug="str", name="str", is_platform="bool",
        requests_per_minute="int?", tokens_per_minute="int?", concurrent_requests="int?", max_instances="int?",
        max_gpus="int?", monthly_budget="num?", created_at="datetime", updated_at="datetime",
    )
    return {
        "Storage": storage,
        "Instance": instance,
        "InstanceDetail": {"allOf": [ref("Instance"), obj(storages={"type": "array", "items": ref("Storage")})]},
        "ActionLog": obj(
            object="str", id="uuid", instance_id="uuid?", action_type=enum_of(ActionType), component="str",
            status="str",
            error_code="str?", error_message="str?", metadata="object", duration_ms="int?", created_at="datetime",
            completed_at="datetime?",
        ),
        "ApiKey": api_key,
        "Organization": organization,
        "OrganizationDetail": {"allOf": [ref("Organization"), obj(
            usage=obj(live_instances="int", live_gpus="int", month_spend="num"))]},
        "CreatedApiKey": {"allOf": [ref("ApiKey"), obj(key="str")]},
        "Provider": obj(object="str", id="uuid", code="str", name="str", is_active="bool",
                            created_at="datetime", worker_data_volume_gb_default="int?"),
        "Zone": obj(object="str", id="uuid", provider_id="uuid", provider_code="str", code="str", name="str",
                        is_active="bool", created_at="datetime"),
        "InstanceType": obj(
            object="str", id="uuid", provider_id="uuid", provider_code="str", code="str", name="str",
            gpu_count="int", gpu_model="str?", vram_gb_per_gpu="int", cpu_count="int", ram_gb="int",
            cost_per_hour="num", worker_port="int", allocation_params="object", is_active="bool",
            created_at="datetime",
            zones=array(obj(zone_id="uuid", zone_code="str", is_available="bool")),
        ),
        "Model": obj(object="str", id="uuid", name="str", hf_repo_id="str", is_active="bool",
                         parameter_count="int?", context_length="int?",
                         data_volume_gb=_MODEL_DATA_VOLUME,
                         created_at="datetime", updated_at="datetime"),
        "Offering": obj(
            object="str", id="uuid", organization_id="uuid", organization_slug="str", model_id="uuid",
            model_hf_repo_id="str", model_code="str", name="str", visibility="str", is_active="bool",
            created_at="datetime", updated_at="datetime", granted_organization_ids=array("uuid"),
        ),
        "UsageReport": obj(
            object="str", organization_id="uuid", group_by="str",
            data=array(obj(
                False, day="date", model_id="uuid?", model="str", instance_id="uuid?", api_key_id="uuid?",
                api_key_name="str?", requests="int",
                successful_requests="int", prompt_tokens="int", completion_tokens="int", total_tokens="int",
            )),
            totals=obj(requests="int", successful_requests="int", prompt_tokens="int",
                           completion_tokens="int", total_tokens="int"),
            **{"from": "datetime", "to": "datetime"},
        ),
        "WorkerHeartbeat": obj(
            object="str", instance_id="uuid", worker_status=enum_of(WorkerStatus), worker_model_id="str?",
            worker_queue_depth="int", worker_last_heartbeat_at="datetime",
        ),
    }


def _openai_schemas() -> dict[str, Schema]:
    # What gateway/request_body.py accepts as a model name: text that is not blank.
    model: Schema = {"type": "string", "minLength": 1, "pattern": TEXT_PATTERN}
    stream_options = obj(False, include_usage="bool")
    usage_schema = obj(False, prompt_tokens="int", completion_tokens="int", total_tokens="int")
    text_or_tokens: Schema = {"oneOf": [scalar("str"), array("str"), array("int"), array(array("int"))]}
    extra = {"additionalProperties": True}
    return {
        "ChatMessage": obj(False, role="str", content={"oneOf": [scalar("str"), array("object"), {"type": "null"}]})
        | {"required": ["role"]},
        "ChatCompletionRequest": obj(
            False, model=model, messages={"type": "array", "items": ref("ChatMessage")}, stream="bool",
            stream_options=stream_options, max_tokens="int?", temperature="num?", top_p="num?", n="int?",
            stop={"oneOf": [scalar("str"), array("str"), {"type": "null"}]}, user="str",
        ) | {"required": ["model", "messages"]} | extra,
        "CompletionRequest": obj(
            False, model=model, prompt=text_or_tokens, stream="bool", stream_options=stream_options,
            max_tokens="int?", temperature="num?", top_p="num?", n="int?", user="str",
        ) | {"required": ["model", "prompt"]} | extra,
        "EmbeddingRequest": obj(False, model=model, input=text_or_tokens, encoding_format="str", user="str")
        | {"required": ["model", "input"]} | extra,
        "Usage": usage_schema,
        "ChatCompletion": obj(
            False, id="str", object="str", created="int", model="str", usage=ref("Usage"),
            choices=array(obj(False, index="int", message=ref("ChatMessage"), finish_reason="str?")),
        ) | {"required": ["id", "object", "created", "model", "choices"]},
        "Completion": obj(
            False, id="str", object="str", created="int", model="str", usage=ref("Usage"),
            choices=array(obj(False, index="int", text="str", finish_reason="str?")),
        ) | {"required": ["id", "object", "created", "model", "choices"]},
        "EmbeddingList": obj(
            object="str", model="str", usage=ref("Usage"),
            data=array(obj(object="str", index="int",
                                embedding={"oneOf": [array("num"), scalar("str")]})),
        ),
        "ModelList": obj(object="str", data=array(obj(id="str", object="str", created="int", owned_by="str"))),
    }


def _components() -> Schema:
    error = obj(error=obj(False, message="str", type="str", code=enum_of(ErrorCode), param="str?")
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
            f"Error{code}": {"description": text, "content": {"application/json": {"schema": ref("Error")}}}
            for code, text in _ERRORS.items()
        },
    }


def document(control_routes: Iterable[DescribedRoute]) -> Schema:
    """The document of the data plane's paths and of these control API routes (routes.control_routes())."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Inventiv gateway",
            "version": "0.1.0",
            "description": "OpenAI-compatible inference (`/v1`) and the control API of the GPU fleet.",
        },
        "paths": {**_data_plane_paths(), **_control_paths(control_routes)},
        "components": _components(),
    }
