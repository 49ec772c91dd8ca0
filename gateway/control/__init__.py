"""The control API: deployments, instances and volumes, action logs, API keys, catalog, usage."""

from __future__ import annotations

from aiohttp import web


def setup_control_api(app: web.Application) -> None:
    """Register the control API's routes on the gateway app."""
    from gateway.control import (
        action_logs,
        api_keys,
        catalog,
        deployments,
        heartbeat,
        instances,
        models,
        offerings,
        openapi,
        usage,
    )

    app.router.add_routes([
        web.post("/deployments", deployments.create_deployment),
        web.get("/instances", instances.list_instances),
        web.get("/instances/{id}", instances.get_instance),
        web.delete("/instances/{id}", instances.terminate_instance),
        web.get("/action_logs", action_logs.list_action_logs),
        web.get("/api_keys", api_keys.list_keys),
        web.post("/api_keys", api_keys.create_key),
        web.delete("/api_keys/{id}", api_keys.revoke_key),
        web.get("/providers", catalog.list_providers),
        web.get("/zones", catalog.list_zones),
        web.get("/instance_types", catalog.list_instance_types),
        web.get("/models", models.list_models),
        web.post("/models", models.create_model),
        web.patch("/models/{id}", models.update_model),
        web.get("/offerings", offerings.list_offerings),
        web.post("/offerings", offerings.create_offering),
        web.patch("/offerings/{id}", offerings.update_offering),
        web.get("/usage", usage.get_usage),
        web.post("/internal/workers/heartbeat", heartbeat.record_heartbeat),
        web.get("/openapi.json", openapi.openapi_json),
    ])
