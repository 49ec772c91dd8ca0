"""The new-deployment form: pickers from the catalog with availability, errors next to their field, and
the API's Idempotency-Key safety (each form carries its own key, so a double submit makes one instance)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway import state
from gateway.console.auth import signed_in
from gateway.console.catalog_pages import load_catalog
from gateway.console.render import render
from gateway.console.sessions import Session, session_principal
from gateway.control import deployments
from gateway.errors import ApiError

_TEXT_FIELDS = ("instance_type_id", "zone_id", "model_id")


def deployment_body(form: Mapping[str, str]) -> dict[str, Any]:
    """The JSON body POST /deployments would get from this form: blank fields absent, a whole number of GB
    as an int (anything else is left as typed, for the API's check to name), the checkbox as a bool."""
    body: dict[str, Any] = {name: form[name] for name in _TEXT_FIELDS if form.get(name)}
    size = form.get("data_volume_gb", "").strip()
    if size:
        body["data_volume_gb"] = int(size) if size.isdigit() else size
    body["data_volume_delete_on_terminate"] = form.get("data_volume_delete_on_terminate") == "on"
    return body


def field_errors(error: ApiError) -> dict[str, str]:
    """The error under the field it names; `_form` when it names none (shown above the form)."""
    return {error.param if error.param in (*_TEXT_FIELDS, "data_volume_gb") else "_form": error.message}


async def _form(request: web.Request, session: Session, values: Mapping[str, str], errors: dict[str, str],
                status: int = 200) -> web.Response:
    catalog = await load_catalog(request.app[state.DB])
    return render("deploy.html", session, status=status, values=values, errors=errors,
                  models=[m for m in catalog["models"] if m["is_active"]],
                  instance_types=[t for t in catalog["instance_types"] if t["is_active"]],
                  zones=[z for z in catalog["zones"] if z["is_active"]])


@signed_in
async def deploy_page(request: web.Request, session: Session) -> web.StreamResponse:
    values = {"idempotency_key": str(uuid.uuid4()), "data_volume_delete_on_terminate": "on"}
    return await _form(request, session, values, {})


@signed_in
async def deploy(request: web.Request, session: Session) -> web.StreamResponse:
    form = {k: str(v) for k, v in (await request.post()).items()}
    try:
        detail, _ = await deployments.deploy(
            request.app, session_principal(session), deployment_body(form), form.get("idempotency_key") or None
        )
    except ApiError as exc:
        return await _form(request, session, form, field_errors(exc), status=exc.status)
    assert detail is not None
    raise web.HTTPSeeOther(f"/console/instances/{detail['id']}")
