"""Typed keys for what the gateway application holds (aiohttp AppKeys)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiopg
import redis.asyncio as aioredis
from aiohttp import web

from gateway.auth import KeyTable
from inventiv.settings import Settings
from inventiv.worker_secrets import WorkerSecrets

if TYPE_CHECKING:
    from gateway.plane import DataPlane

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", aiopg.Pool)
REDIS = web.AppKey("redis", aioredis.Redis)
KEYS: web.AppKey[KeyTable] = web.AppKey("keys")
WORKER_SECRETS = web.AppKey("worker_secrets", WorkerSecrets)


@dataclass
class Lifecycle:
    """Readiness of this process: caches loaded, draining after SIGTERM, requests in flight."""

    loaded: bool = False
    draining: bool = False
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def enter(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
# The inference path's in-memory state (keys, catalog, workers, affinity, usage, upstream pool).
PLANE: web.AppKey[DataPlane] = web.AppKey("plane")
