"""Session affinity: `X-Inventiv-Session` pins a conversation to one instance, in Redis, sliding TTL.

Pins are per organization: a session id is only a name a client chose, and another tenant may choose it too.

Redis is an optimisation here, never a dependency: any Redis error or slow answer routes the request
without affinity, and a short circuit breaker keeps a Redis outage from adding its timeout to every
request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from inventiv import redis_keys
from inventiv.settings import Settings

log = logging.getLogger(__name__)

SESSION_HEADERS = ("X-Inventiv-Session", "X-Session-Id")
# Session ids are client-chosen; a bound keeps Redis keys (and logs) small.
MAX_SESSION_LEN = 256
# Loopback Redis answers in well under a millisecond; past this it is in trouble and we route without it.
_TIMEOUT_S = 0.25
# After a failure, skip Redis this long: one slow request per second instead of every request.
_BREAKER_S = 1.0
# A pin is remembered in this process for this long before Redis is asked again. A Redis round trip
# per request cost more CPU than a whole request through a Rust router; with this, an active session
# costs one GETEX per 5 s per process, the sliding TTL (minutes) still slides, and a failover decided
# by another process reaches this one within 5 s (one decided here applies at once).
_LOCAL_S = 5.0
# Sessions remembered per process (about 200 bytes each); the oldest are forgotten first.
_LOCAL_MAX = 100_000


class Affinity:
    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self._redis = redis
        self._prefix = settings.redis_prefix
        self._ttl = settings.affinity_ttl_s
        self._down_until = 0.0
        self._local: dict[str, tuple[str, float]] = {}

    def _key(self, organization_id: str, model_id: str, session: str) -> str:
        return self._prefix + redis_keys.AFFINITY.format(org=organization_id, model=model_id, session=session)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def lookup(self, organization_id: str, model_id: str, session: str) -> str | None:
        """The organization's pinned instance id (refreshing the TTL), or None; raises AffinityUnavailable."""
        key = self._key(organization_id, model_id, session)
        now = time.monotonic()
        remembered = self._local.get(key)
        if remembered is not None and now - remembered[1] < _LOCAL_S:
            return remembered[0]
        value = await self._call(self._redis.getex(key, ex=self._ttl))
        if isinstance(value, bytes):
            value = value.decode()
        if not isinstance(value, str):
            self._local.pop(key, None)
            return None
        self._remember(key, value, now)
        return value

    async def pin(self, organization_id: str, model_id: str, session: str, instance_id: str) -> None:
        key = self._key(organization_id, model_id, session)
        self._remember(key, instance_id, time.monotonic())
        await self._call(self._redis.set(key, instance_id, ex=self._ttl))

    def _remember(self, key: str, instance_id: str, now: float) -> None:
        self._local.pop(key, None)
        if len(self._local) >= _LOCAL_MAX:
            del self._local[next(iter(self._local))]
        self._local[key] = (instance_id, now)

    async def _call(self, command: object) -> object:
        if not self.available:
            _close(command)
            raise AffinityUnavailable("redis circuit open")
        try:
            async with asyncio.timeout(_TIMEOUT_S):
                return await command  # type: ignore[misc]
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = time.monotonic() + _BREAKER_S
            log.warning("session affinity unavailable; routing without it", extra={"error": str(exc)})
            raise AffinityUnavailable(str(exc)) from None


class AffinityUnavailable(Exception):
    pass


def _close(command: object) -> None:
    close = getattr(command, "close", None)
    if close is not None:
        close()


def session_of(headers: Mapping[str, str]) -> str | None:
    """The session id from the request headers, or None."""
    for name in SESSION_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None
