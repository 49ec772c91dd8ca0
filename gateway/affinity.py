"""Session affinity: `X-Inventiv-Session` pins a conversation to one instance, in Redis, sliding TTL.

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


class Affinity:
    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self._redis = redis
        self._prefix = settings.redis_prefix
        self._ttl = settings.affinity_ttl_s
        self._down_until = 0.0

    def _key(self, model_id: str, session: str) -> str:
        return self._prefix + redis_keys.AFFINITY.format(model=model_id, session=session)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def lookup(self, model_id: str, session: str) -> str | None:
        """The pinned instance id (refreshing the TTL), or None; raises AffinityUnavailable."""
        value = await self._call(self._redis.getex(self._key(model_id, session), ex=self._ttl))
        if isinstance(value, bytes):
            return value.decode()
        return value if isinstance(value, str) else None

    async def pin(self, model_id: str, session: str, instance_id: str) -> None:
        await self._call(self._redis.set(self._key(model_id, session), instance_id, ex=self._ttl))

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
