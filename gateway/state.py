"""Typed keys for what the gateway application holds (aiohttp AppKeys)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiopg
import redis.asyncio as aioredis
from aiohttp import web

from gateway.auth import KeyTable
from gateway.lifecycle import Lifecycle
from inventiv.settings import Settings
from inventiv.worker_secrets import WorkerSecrets

if TYPE_CHECKING:
    from gateway.plane import DataPlane

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", aiopg.Pool)
REDIS = web.AppKey("redis", aioredis.Redis)
KEYS: web.AppKey[KeyTable] = web.AppKey("keys")
WORKER_SECRETS = web.AppKey("worker_secrets", WorkerSecrets)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
# The inference path's in-memory state (keys, catalog, workers, affinity, usage, upstream pool).
PLANE: web.AppKey[DataPlane] = web.AppKey("plane")
