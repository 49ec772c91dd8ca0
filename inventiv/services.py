"""Resolve the services a command runs against: the configured URLs, or the embedded default."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import aiopg
import redis.asyncio as aioredis

from inventiv.embedded import EmbeddedServices
from inventiv.settings import Settings
from inventiv.worker_secrets import embedded_key
from sql.pool import close_pool, create_pool


@contextmanager
def ensure_services(settings: Settings, *, redis: bool = True) -> Iterator[Settings]:
    """Yield settings whose URLs are set, starting embedded services for the missing ones."""
    need_pg = settings.database_url is None
    need_redis = redis and settings.redis_url is None
    if not (need_pg or need_redis):
        yield settings
        return
    if need_pg and settings.worker_secret_key is None:
        # One machine runs everything: the data folder holds the installation's worker secret key too.
        settings = settings.replace(worker_secret_key=embedded_key(settings.data_path))
    embedded = EmbeddedServices(settings.data_path).start(postgres=need_pg, redis=need_redis)
    try:
        yield settings.replace(
            database_url=settings.database_url or embedded.database_url,
            redis_url=settings.redis_url or embedded.redis_url,
        )
    finally:
        embedded.stop()


@asynccontextmanager
async def open_pool(settings: Settings, *, maxsize: int = 10) -> AsyncIterator[aiopg.Pool]:
    assert settings.database_url is not None, "ensure_services() resolves the URL first"
    pool = await create_pool(settings.database_url, maxsize=maxsize)
    try:
        yield pool
    finally:
        await close_pool(pool)


def redis_client(settings: Settings) -> aioredis.Redis:
    assert settings.redis_url is not None, "ensure_services() resolves the URL first"
    # Short timeouts: Redis is on the hot path, and a Redis outage must degrade, not hang, requests.
    # redis-py's default pool of 100 connections ran out when a thousand streams opened at once.
    return aioredis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=1.0, socket_timeout=2.0, health_check_interval=30,
        max_connections=1000,
    )
