"""The catalog as the console shows it (models, instance types with availability by zone, zones,
offerings): the control API's own catalog queries, whole lists (a catalog is tens of rows)."""

from __future__ import annotations

from typing import Any

import aiopg
from aiohttp import web

from gateway import state
from gateway.console.auth import signed_in
from gateway.console.render import render
from gateway.console.sessions import Session
from gateway.control.pagination import MAX_LIMIT
from sql.queries import fetch_all, queries


async def load_catalog(pool: aiopg.Pool) -> dict[str, list[dict[str, Any]]]:
    catalog = queries.catalog
    async with pool.acquire() as conn:
        return {
            "models": await fetch_all(catalog.list_catalog_models(
                conn, is_active=None, after_hf_repo_id=None, limit=MAX_LIMIT)),
            "instance_types": await fetch_all(catalog.list_catalog_instance_types(
                conn, provider=None, zone=None, is_active=None, after_provider_code=None, after_code=None,
                limit=MAX_LIMIT)),
            "zones": await fetch_all(catalog.list_catalog_zones(
                conn, provider=None, is_active=None, after_provider_code=None, after_code=None, limit=MAX_LIMIT)),
            "offerings": await fetch_all(catalog.list_catalog_offerings(
                conn, offering_id=None, organization_id=None, model_id=None, is_active=None, visibility=None,
                after_organization_slug=None, after_model_code=None, limit=MAX_LIMIT)),
        }


@signed_in
async def catalog_page(request: web.Request, session: Session) -> web.StreamResponse:
    catalog = await load_catalog(request.app[state.DB])
    return render("catalog.html", session, models=catalog["models"], instance_types=catalog["instance_types"],
                  offerings=catalog["offerings"])
