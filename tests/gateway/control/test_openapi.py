"""GET /openapi.json: a valid OpenAPI 3.1 document describing every route the real app registers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from openapi_spec_validator import validate

from gateway.app import create_app
from gateway.control.routes import openapi_document
from gateway.error_codes import ErrorCode
from inventiv.action_types import ActionType
from inventiv.settings import Settings
from inventiv.statuses import InstanceStatus, WorkerStatus

if TYPE_CHECKING:
    from conftest import Api

# aiohttp adds HEAD for every GET; OpenAPI leaves HEAD implied. "*" routes (none today) match any method.
_IMPLIED = {"HEAD"}


def _registered_routes(settings: Settings) -> set[tuple[str, str]]:
    app = create_app(settings)
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        # The console's HTML pages (/console/...) are for browsers, not part of the API.
        if route.method in _IMPLIED or path is None or path.startswith("/console"):
            continue
        routes.add((route.method.lower(), path))
    return routes


async def test_document_is_valid_and_served_without_a_key(api: Api) -> None:
    async with api.client.get("/openapi.json") as resp:
        assert resp.status == 200
        document: dict[str, Any] = await resp.json()
    validate(document)
    assert document["openapi"].startswith("3.")


async def test_every_registered_route_is_described(api: Api) -> None:
    async with api.client.get("/openapi.json") as resp:
        paths = (await resp.json())["paths"]
    described = {(method, path) for path, item in paths.items() for method in item if method != "parameters"}
    registered = _registered_routes(api.settings)
    assert {("get", "/instances/{id}"), ("post", "/deployments"), ("get", "/healthz")} <= registered
    assert registered - described == set()
    # Nothing is described that the app does not serve (the /v1 routes come from the data plane's module,
    # which registers them itself; the first assertion holds it to this document).
    assert {(m, p) for m, p in described - registered if not p.startswith("/v1/")} == set()
    for must in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/healthz",
                 "/readyz", "/metrics", "/deployments", "/instances/{id}", "/internal/workers/heartbeat"):
        assert must in paths


async def test_request_schemas_come_from_the_enforced_specs(api: Api) -> None:
    async with api.client.get("/openapi.json") as resp:
        document = await resp.json()
    deployment = document["paths"]["/deployments"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert deployment["additionalProperties"] is False
    assert set(deployment["required"]) == {"instance_type_id", "zone_id", "model_id"}
    assert deployment["properties"]["data_volume_gb"]["minimum"] == 0
    keep = deployment["properties"]["data_volume_delete_on_terminate"]
    assert (keep["type"], keep["default"]) == ("boolean", True)
    assert deployment["properties"]["data_volume_gb"]["default"] is None
    instance = document["components"]["schemas"]["Instance"]
    assert instance["properties"]["data_volume_delete_on_terminate"] == {"type": "boolean"}
    assert "data_volume_delete_on_terminate" in instance["required"]
    params = {p["name"] for p in document["paths"]["/instances"]["get"]["parameters"]}
    assert params == {"status", "model", "provider", "zone", "limit", "cursor"}
    schemas = document["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]["properties"]
    assert {"model", "messages", "stream", "stream_options"} <= set(chat)
    assert {"prompt", "stream_options"} <= set(schemas["CompletionRequest"]["properties"])
    assert "input" in schemas["EmbeddingRequest"]["properties"]
    assert schemas["Error"]["properties"]["error"]["required"] == ["message", "type", "code"]


def _properties_named(node: Any, name: str, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict) and name in value:
                yield where, value[name]
            yield from _properties_named(value, name, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _properties_named(value, name, f"{where}/{i}")


def test_data_volume_gb_says_what_null_and_0_mean() -> None:
    found = dict(_properties_named(openapi_document(), "data_volume_gb"))
    assert {"/paths//deployments/post/requestBody/content/application/json/schema",
            "/paths//models/post/requestBody/content/application/json/schema",
            "/paths//models/{id}/patch/requestBody/content/application/json/schema",
            "/components/schemas/Instance", "/components/schemas/Model"} <= set(found)
    for where, schema in found.items():
        text = schema.get("description", "")
        assert "null" in text and "sized by the scheduler" in text and "0: no data volume" in text, where
    deployment = found["/paths//deployments/post/requestBody/content/application/json/schema"]
    assert "null or absent" in deployment["description"] and deployment["default"] is None


async def test_the_console_session_cookie_is_an_alternative_to_a_key(api: Api) -> None:
    async with api.client.get("/openapi.json") as resp:
        document = await resp.json()
    assert document["components"]["securitySchemes"]["consoleSession"]["in"] == "cookie"
    assert document["paths"]["/instances"]["get"]["security"] == [{"apiKey": []}, {"consoleSession": []}]
    assert document["paths"]["/internal/workers/heartbeat"]["post"]["security"] == [{"workerToken": []}]


def test_statuses_are_published_as_their_enums() -> None:
    schemas = openapi_document()["components"]["schemas"]
    instance = schemas["Instance"]["properties"]
    assert instance["status"] == {"type": "string", "enum": [s.value for s in InstanceStatus]}
    assert instance["worker_status"] == {"type": "string", "enum": [s.value for s in WorkerStatus]}
    assert schemas["WorkerHeartbeat"]["properties"]["worker_status"] == instance["worker_status"]


def test_action_types_are_published_as_their_enum() -> None:
    action_log = openapi_document()["components"]["schemas"]["ActionLog"]["properties"]
    assert action_log["action_type"] == {"type": "string", "enum": [a.value for a in ActionType]}


def test_error_codes_are_published_as_their_enum() -> None:
    error = openapi_document()["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["properties"]["code"] == {"type": "string", "enum": [c.value for c in ErrorCode]}
