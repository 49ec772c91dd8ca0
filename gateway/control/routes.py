"""The control API's route table: each route's method, path, handler and OpenAPI operation.

The app serves this one table (gateway/control/__init__.py) and the document describes it
(openapi.py), so no route is served undescribed or described but not served.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

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
from gateway.control.input_validation import Spec, body_schema
from gateway.control.openapi import document
from gateway.control.placement import IDEMPOTENCY_KEY
from gateway.control.responses import dumps
from gateway.control.schema import Schema, list_of, operation, ref, with_defaults
from gateway.errors import Handler


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
    return Route("GET", path, handler, operation(tag, summary, (200, list_of(item)), query=query))


@functools.cache
def control_routes() -> tuple[Route, ...]:
    mine = (400, 401, 403, 404)
    return (
        Route("POST", "/deployments", deployments.create_deployment, operation(
            "deployments", "Ask for a GPU instance serving a model", (202, ref("InstanceDetail")),
            body=with_defaults(body_schema(deployments.BODY), deployments.DEFAULTS),
            errors=(400, 401, 403, 404, 409, 429),
        ) | {"parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                             "schema": {"type": "string", "pattern": f"^{IDEMPOTENCY_KEY.pattern}$"},
                             "description": "repeating a key returns the first instance"}]}),
        _list_route("/instances", instances.list_instances, "instances", "List instances with their storage summary",
                    "Instance", instances.LIST_QUERY),
        Route("GET", "/instances/{id}", instances.get_instance, operation(
            "instances", "One instance with every tracked volume", (200, ref("InstanceDetail")),
            errors=mine, path_id=True)),
        Route("DELETE", "/instances/{id}", instances.terminate_instance, operation(
            "instances", "Terminate an instance", (202, ref("InstanceDetail")),
            errors=(400, 401, 403, 404, 409), path_id=True)),
        _list_route("/action_logs", action_logs.list_action_logs, "action_logs", "Action logs, newest first",
                    "ActionLog", action_logs.LIST_QUERY),
        _list_route("/api_keys", api_keys.list_keys, "api_keys",
                    "The organization's API keys (never the keys themselves)", "ApiKey", api_keys.LIST_QUERY),
        Route("POST", "/api_keys", api_keys.create_key, operation(
            "api_keys", "Create an API key; the key is shown once", (201, ref("CreatedApiKey")),
            body=body_schema(api_keys.BODY))),
        Route("DELETE", "/api_keys/{id}", api_keys.revoke_key, operation(
            "api_keys", "Revoke an API key", (200, ref("ApiKey")), errors=mine, path_id=True)),
        Route("PATCH", "/api_keys/{id}", api_keys.set_key_limits, operation(
            "api_keys", "Set or clear (null) the key's rate limits and fail mode", (200, ref("ApiKey")),
            body=body_schema(api_keys.LIMITS_BODY, non_empty=True), errors=mine, path_id=True)),
        _list_route("/organizations", organizations.list_organizations, "organizations",
                    "Organizations: every one for a platform admin, else the key's own", "Organization",
                    organizations.LIST_QUERY),
        Route("POST", "/organizations", organizations.create_organization, operation(
            "organizations", "Create an organization (platform admins)", (201, ref("OrganizationDetail")),
            body=body_schema(organizations.CREATE_BODY), errors=(400, 401, 403, 409))),
        Route("GET", "/organizations/{id}", organizations.get_organization, operation(
            "organizations", "One organization with its limits, quotas and their current use",
            (200, ref("OrganizationDetail")), errors=mine, path_id=True)),
        Route("PATCH", "/organizations/{id}", organizations.update_organization, operation(
            "organizations", "Change an organization's name, limits or quotas (platform admins; null: unlimited)",
            (200, ref("OrganizationDetail")), body=body_schema(organizations.UPDATE_BODY, non_empty=True), errors=mine,
            path_id=True)),
        _list_route("/providers", cloud_catalog.list_providers, "catalog", "Cloud providers", "Provider",
                    cloud_catalog.PROVIDERS_QUERY),
        _list_route("/zones", cloud_catalog.list_zones, "catalog", "Zones", "Zone", cloud_catalog.ZONES_QUERY),
        _list_route("/instance_types", cloud_catalog.list_instance_types, "catalog",
                    "Instance types with their availability by zone", "InstanceType",
                    cloud_catalog.INSTANCE_TYPES_QUERY),
        _list_route("/models", models.list_models, "catalog", "Models", "Model", models.LIST_QUERY),
        Route("POST", "/models", models.create_model, operation(
            "catalog", "Add a model", (201, ref("Model")), body=body_schema(models.CREATE_BODY),
            errors=(400, 401, 403, 409))),
        Route("PATCH", "/models/{id}", models.update_model, operation(
            "catalog", "Change a model (activate, deactivate, data_volume_gb)", (200, ref("Model")),
            body=body_schema(models.UPDATE_BODY, non_empty=True), errors=mine, path_id=True)),
        _list_route("/offerings", offerings.list_offerings, "catalog", "Offerings", "Offering", offerings.LIST_QUERY),
        Route("POST", "/offerings", offerings.create_offering, operation(
            "catalog", "Publish a model as org_slug/model_code", (201, ref("Offering")),
            body=body_schema(offerings.CREATE_BODY), errors=(400, 401, 403, 404, 409))),
        Route("PATCH", "/offerings/{id}", offerings.update_offering, operation(
            "catalog", "Change an offering", (200, ref("Offering")),
            body=body_schema(offerings.UPDATE_BODY, non_empty=True), errors=mine, path_id=True)),
        Route("GET", "/usage", usage_report.get_usage, operation(
            "usage", "Usage sums of an organization", (200, ref("UsageReport")), query=usage_report.QUERY)),
        Route("POST", "/internal/workers/heartbeat", heartbeat.record_heartbeat, operation(
            "workers", "A worker agent reports its state", (200, ref("WorkerHeartbeat")),
            body=body_schema(heartbeat.BODY), errors=(400, 401, 409), security="workerToken")),
        Route("GET", "/openapi.json", openapi_json, operation(
            "meta", "This document", (200, {"type": "object"}), errors=(), security=None)),
    )


@functools.cache
def openapi_document() -> Schema:
    """The whole document: the data plane's paths and this table's."""
    return document(control_routes())


@functools.cache
def _encoded() -> bytes:
    return dumps(openapi_document())


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_encoded(), content_type="application/json")
