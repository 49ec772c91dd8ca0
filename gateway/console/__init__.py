"""The console: server-rendered pages under /console for people signed in with email and password."""

from __future__ import annotations

from aiohttp import web


async def _home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/console/fleet")


def setup_console(app: web.Application) -> None:
    """Register the console's routes. They add no middleware: the `/v1` routes run exactly as before."""
    from gateway.console import catalog_pages, deploy, fleet, keys, playground, render, sign_in, usage_pages

    app.router.add_routes([
        web.get("/console", _home),
        web.get("/console/sign-in", sign_in.sign_in_page),
        web.post("/console/sign-in", sign_in.sign_in),
        web.post("/console/sign-out", sign_in.sign_out),
        web.get("/console/fleet", fleet.fleet_page),
        web.get("/console/fleet/rows", fleet.fleet_rows),
        web.get("/console/instances/{id}", fleet.instance_page),
        web.get("/console/instances/{id}/panel", fleet.instance_panel),
        web.post("/console/instances/{id}/terminate", fleet.terminate),
        web.get("/console/deploy", deploy.deploy_page),
        web.post("/console/deploy", deploy.deploy),
        web.get("/console/keys", keys.keys_page),
        web.post("/console/keys", keys.create_key),
        web.post("/console/keys/{id}/revoke", keys.revoke_key),
        web.get("/console/catalog", catalog_pages.catalog_page),
        web.get("/console/usage", usage_pages.usage_page),
        web.get("/console/usage.csv", usage_pages.usage_csv),
        web.get("/console/playground", playground.playground_page),
        web.get(f"{render.STATIC_PREFIX}/{{version}}/{{name}}", render.static_file),
    ])
    app.cleanup_ctx.append(playground.playground_sweeper)
