"""Console sessions: CSRF comparison, cookie attributes, and the Redis store with its sliding expiry."""

from __future__ import annotations

import hashlib

import pytest
import redis.asyncio as aioredis

from gateway.console.sessions import Session, SessionStore, cookie_options, csrf_ok, session_principal
from inventiv import redis_keys
from inventiv.settings import Settings

USER = {"id": "u1", "email": "a@b.c", "organization_id": "o1", "organization_slug": "demo"}


def _session(token: str = "t0ken") -> Session:
    return Session(id="s", user_id="u1", email="a@b.c", organization_id="o1", organization_slug="demo",
                   csrf_token=token)


@pytest.mark.parametrize(("given", "ok"), [("t0ken", True), ("t0ken ", False), ("", False), (None, False),
                                           ("T0KEN", False), ("other", False)])
def test_csrf_token_must_match_exactly(given: str | None, ok: bool) -> None:
    assert csrf_ok(_session(), given) is ok


@pytest.mark.parametrize("secure", [True, False])
def test_cookie_is_http_only_same_site_and_secure_over_tls(secure: bool) -> None:
    assert cookie_options(secure, 60) == {"httponly": True, "samesite": "Lax", "secure": secure, "path": "/",
                                          "max_age": 60}


def test_a_user_acts_as_an_admin_of_their_organization_only() -> None:
    principal = session_principal(_session())
    assert (principal.organization_id, principal.organization_slug, principal.is_admin) == ("o1", "demo", True)
    assert principal.key_id == "user:u1"


async def test_store_keeps_sessions_under_the_cookie_digest_with_a_sliding_expiry(
    redis: aioredis.Redis, settings: Settings
) -> None:
    store = SessionStore(redis, settings.replace(console_session_ttl_s=100))
    session = await store.create(USER)
    key = redis_keys.key(settings, redis_keys.CONSOLE_SESSION.format(
        digest=hashlib.sha256(session.id.encode()).hexdigest()))
    assert session.id.encode() not in (await redis.get(key) or b"")
    await redis.expire(key, 5)
    assert await store.load(session.id) == session
    assert 95 <= await redis.ttl(key) <= 100
    assert await store.load(session.id + "x") is None
    await store.delete(session)
    assert await store.load(session.id) is None


async def test_store_forgets_an_expired_session(redis: aioredis.Redis, settings: Settings) -> None:
    store = SessionStore(redis, settings)
    session = await store.create(USER)
    await redis_keys.delete_prefix(redis, redis_keys.key(settings, "console:session:"))
    assert await store.load(session.id) is None
