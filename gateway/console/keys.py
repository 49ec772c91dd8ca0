"""API keys of the organization: list, create (the key shown once, with a copy button), revoke — through
the control API's own functions."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.console.auth import signed_in
from gateway.console.render import render
from gateway.console.sessions import Session, session_principal
from gateway.control import api_keys
from gateway.control.input_validation import parse_uuid
from gateway.control.pagination import BY_CREATED_AT, fetch_page
from gateway.errors import ApiError
from sql.queries import queries


async def _page(request: web.Request, session: Session, *, created: dict[str, Any] | None = None,
                error: str | None = None, status: int = 200) -> web.Response:
    rows, page = await fetch_page(
        request, api_keys.LIST_QUERY, BY_CREATED_AT, queries.api_keys.list_api_keys,
        organization_id=session.organization_id,
    )
    return render("keys.html", session, status=status, keys=rows[: page.limit], created=created, error=error,
                  scopes=api_keys.SCOPES)


@signed_in
async def keys_page(request: web.Request, session: Session) -> web.StreamResponse:
    return await _page(request, session)


@signed_in
async def create_key(request: web.Request, session: Session) -> web.StreamResponse:
    form = await request.post()
    body = {"name": str(form.get("name", "")).strip(), "scopes": [str(s) for s in form.getall("scopes", [])]}
    try:
        created = await api_keys.create(request.app, session_principal(session), body)
    except ApiError as exc:
        return await _page(request, session, error=exc.message, status=exc.status)
    return await _page(request, session, created=created, status=201)


@signed_in
async def revoke_key(request: web.Request, session: Session) -> web.StreamResponse:
    await api_keys.revoke(request.app, session_principal(session), parse_uuid(request.match_info["id"], "id"))
    raise web.HTTPSeeOther("/console/keys")
