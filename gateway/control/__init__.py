"""The control API: deployments, instances and volumes, action logs, API keys, catalog, usage."""

from __future__ import annotations

from aiohttp import web


def setup_control_api(app: web.Application) -> None:
    """Register the control API's routes on the gateway app."""
    # Imported here, not at the top, so that importing one control module does not import them all.
    from gateway.console.auth import accept_session
    from gateway.control.request_log import logged
    from gateway.control.routes import control_routes

    app.router.add_routes([web.route(r.method, r.path, logged(accept_session(r.handler))) for r in control_routes()])
