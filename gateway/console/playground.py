"""The chat playground. The browser calls the data plane (`/v1/chat/completions`) itself, streamed, with
an inference key minted for the signed-in session on first use and revoked at sign-out; so the inference
path serves the playground exactly as any client, and nothing was added to it."""

from __future__ import annotations

from aiohttp import web

from gateway import state
from gateway.console import sessions
from gateway.console.auth import signed_in
from gateway.console.catalog import load_catalog
from gateway.console.render import render
from gateway.console.sessions import Session, session_principal
from gateway.control import api_keys
from gateway.errors import ApiError

KEY_NAME = "console playground: {email}"


async def playground_key(app: web.Application, request: web.Request, session: Session) -> Session:
    """The session, with an inference key of its own (minted now if it has none)."""
    if session.playground_key is not None:
        return session
    created = await api_keys.create(
        app, session_principal(session), {"name": KEY_NAME.format(email=session.email), "scopes": ["inference"]}
    )
    return await sessions.store(request).with_playground_key(session, str(created["id"]), created["key"])


async def revoke_playground_key(app: web.Application, session: Session) -> None:
    if session.playground_key_id is None:
        return
    try:
        await api_keys.revoke(app, session_principal(session), session.playground_key_id)
    except ApiError as exc:
        if exc.status != 404:  # revoked by hand on the keys page already: nothing left to do
            raise


@signed_in
async def playground_page(request: web.Request, session: Session) -> web.StreamResponse:
    session = await playground_key(request.app, request, session)
    catalog = await load_catalog(request.app[state.DB])
    models = [m["hf_repo_id"] for m in catalog["models"] if m["is_active"]]
    models += [o["name"] for o in catalog["offerings"] if o["is_active"]]
    return render("playground.html", session, models=models)
