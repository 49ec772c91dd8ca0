"""The control API: deployments, instances and volumes, action logs, API keys, catalog, usage."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gateway.errors import Handler


def setup_control_api(app: web.Application, accept_session: Callable[[Handler], Handler]) -> None:
    """Register the control API's routes on the gateway app, each handler wrapped by `accept_session`
    (the console's: a signed-in browser may call the API with its session cookie instead of a key).

    The wrapper is passed in, not imported: the console sits above the control API and uses it.
    """
    # Imported here, not at the top, so that importing one control module does not import them all.
    from gateway.control.request_log import logged
    from gateway.control.routes import control_routes

    app.router.add_routes([web.route(r.method, r.path, logged(accept_session(r.handler))) for r in control_routes()])
