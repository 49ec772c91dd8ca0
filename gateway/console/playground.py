"""The chat playground. The browser calls the data plane (`/v1/chat/completions`) itself, streamed, with
an inference key minted for the signed-in session on first use, so the inference path serves the
playground exactly as any client, and nothing was added to it.

The key lives as long as its session: revoked at sign-out, and, for a session that expired instead, by a
sweep every few minutes in each gateway process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from gateway import state
from gateway.console.auth import signed_in
from gateway.console.catalog_pages import load_catalog
from gateway.console.render import render
from gateway.console.sessions import Session, SessionStore, session_principal
from gateway.control import api_keys
from gateway.errors import ApiError
from inventiv import redis_keys

KEY_NAME = "console playground: {email}"
# A key outlives an expired session by at most this long; the sweep is one HGETALL and an EXISTS per
# live playground key, cheap at any interval, and revocations are not urgent (the session is gone).
SWEEP_INTERVAL_S = 300.0
# The session fields that rebuild its principal when the session itself is gone.
_OWNER_FIELDS = ("user_id", "email", "organization_id", "organization_slug")

log = logging.getLogger(__name__)


def _index(app: web.Application) -> str:
    return redis_keys.key(app[state.SETTINGS], redis_keys.CONSOLE_PLAYGROUND_KEYS)


def _store(app: web.Application) -> SessionStore:
    return SessionStore(app[state.REDIS], app[state.SETTINGS])


async def playground_key(app: web.Application, session: Session) -> Session:
    """The session, with an inference key of its own (minted now if it has none)."""
    if session.playground_key is not None:
        return session
    created = await api_keys.create(
        app, session_principal(session), {"name": KEY_NAME.format(email=session.email), "scopes": ["inference"]}
    )
    owner = {"session": SessionStore.digest(session.id), **{f: getattr(session, f) for f in _OWNER_FIELDS}}
    await app[state.REDIS].hset(_index(app), str(created["id"]), orjson.dumps(owner))
    return await _store(app).with_playground_key(session, str(created["id"]), created["key"])


async def _revoke(app: web.Application, key_id: str, owner: Session) -> None:
    try:
        await api_keys.revoke(app, session_principal(owner), key_id)
    except ApiError as exc:
        if exc.status != 404:  # gone already (its organization's rows were deleted): nothing left to do
            raise
    await app[state.REDIS].hdel(_index(app), key_id)


async def revoke_playground_key(app: web.Application, session: Session) -> None:
    if session.playground_key_id is not None:
        await _revoke(app, session.playground_key_id, session)


async def sweep_playground_keys(app: web.Application) -> list[str]:
    """Revoke the playground keys of sessions that expired; the ids revoked."""
    store = _store(app)
    revoked = []
    for raw_id, raw in (await app[state.REDIS].hgetall(_index(app))).items():
        key_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
        owner: dict[str, Any] = orjson.loads(raw)
        if await store.alive(owner["session"]):
            continue
        session = Session(id="", csrf_token="", **{f: owner[f] for f in _OWNER_FIELDS})
        await _revoke(app, key_id, session)
        revoked.append(key_id)
    return revoked


async def _sweep_forever(app: web.Application) -> None:
    while True:
        await asyncio.sleep(SWEEP_INTERVAL_S)
        try:
            revoked = await sweep_playground_keys(app)
        except Exception:
            log.exception("sweeping the playground's keys failed; the next sweep retries")
            continue
        if revoked:
            log.info("playground keys of expired sessions revoked", extra={"count": len(revoked)})


async def playground_sweeper(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_sweep_forever(app), name="console-playground-sweep")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@signed_in
async def playground_page(request: web.Request, session: Session) -> web.StreamResponse:
    session = await playground_key(request.app, session)
    catalog = await load_catalog(request.app[state.DB])
    models = [m["hf_repo_id"] for m in catalog["models"] if m["is_active"]]
    models += [o["name"] for o in catalog["offerings"] if o["is_active"]]
    return render("playground.html", session, models=models)

