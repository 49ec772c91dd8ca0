"""Console sign-ins: server-side sessions in Redis, the cookie that names one, and CSRF tokens.

The cookie holds a random id only; Redis holds the session under the id's SHA-256 with a sliding expiry
(Settings.console_session_ttl_s), so signing out or expiry ends it at once on every gateway process.
Every unsafe request made with the cookie must also carry the session's CSRF token (a form field or the
`X-CSRF-Token` header): another site can make a browser send the cookie, never read the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from gateway import state
from gateway.auth import Principal
from inventiv import redis_keys
from inventiv.settings import Settings

COOKIE = "inventiv_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
# 256 random bits: as hard to guess as an API key.
_ID_BYTES = 32
# A signed-in user manages their organization, as an admin key does, and may call its models.
USER_SCOPES = frozenset(("admin", "inference"))


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user_id: str
    email: str
    organization_id: str
    organization_slug: str
    csrf_token: str
    # The inference key the playground calls the data plane with (minted on first use, revoked at sign-out).
    playground_key_id: str | None = None
    playground_key: str | None = None


def session_principal(session: Session) -> Principal:
    """The principal a signed-in user acts as: their organization's admin, like an admin API key."""
    return Principal(
        key_id=f"user:{session.user_id}",
        organization_id=session.organization_id,
        organization_slug=session.organization_slug,
        scopes=USER_SCOPES,
    )


def csrf_ok(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(session.csrf_token.encode(), given.encode())


def new_token() -> str:
    return secrets.token_urlsafe(_ID_BYTES)


def cookie_options(secure: bool, max_age: int) -> dict[str, Any]:
    """HttpOnly (no script reads it), SameSite=Lax (not sent on other sites' posts), Secure over TLS."""
    return {"httponly": True, "samesite": "Lax", "secure": secure, "path": "/", "max_age": max_age}


def served_over_tls(request: web.Request) -> bool:
    # Behind a TLS-terminating proxy the connection is plain HTTP; the proxy says what the browser used.
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


class SessionStore:
    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self.ttl_s = settings.console_session_ttl_s

    @staticmethod
    def digest(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    def key_of_digest(self, digest: str) -> str:
        return redis_keys.key(self._settings, redis_keys.CONSOLE_SESSION.format(digest=digest))

    def _key(self, session_id: str) -> str:
        return self.key_of_digest(self.digest(session_id))

    async def alive(self, digest: str) -> bool:
        """Whether the session with this digest still exists (without pushing its expiry back)."""
        return bool(await self._redis.exists(self.key_of_digest(digest)))

    async def create(self, user: dict[str, Any]) -> Session:
        session = Session(
            id=new_token(), user_id=str(user["id"]), email=str(user["email"]),
            organization_id=str(user["organization_id"]), organization_slug=str(user["organization_slug"]),
            csrf_token=new_token(),
        )
        await self.save(session)
        return session

    async def save(self, session: Session) -> None:
        fields = {k: v for k, v in asdict(session).items() if k != "id"}
        await self._redis.set(self._key(session.id), orjson.dumps(fields), ex=self.ttl_s)

    async def load(self, session_id: str) -> Session | None:
        """The session, its expiry pushed back; None when it expired, ended or never was."""
        raw = await self._redis.getex(self._key(session_id), ex=self.ttl_s)
        if raw is None:
            return None
        return Session(id=session_id, **orjson.loads(raw))

    async def delete(self, session: Session) -> None:
        await self._redis.delete(self._key(session.id))

    async def with_playground_key(self, session: Session, key_id: str, key: str) -> Session:
        updated = replace(session, playground_key_id=key_id, playground_key=key)
        await self.save(updated)
        return updated


def store(request: web.Request) -> SessionStore:
    return SessionStore(request.app[state.REDIS], request.app[state.SETTINGS])


async def request_session(request: web.Request) -> Session | None:
    """The session the request's cookie names, if it is still alive."""
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return None
    return await store(request).load(session_id)
