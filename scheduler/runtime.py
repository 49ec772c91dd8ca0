"""What every scheduler job works with: settings, the pool, Redis, one provider object per cloud, and
one HTTP session for worker probes. Built once by `scheduler.jobs.build_jobs`, closed on exit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import aiopg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from inventiv import redis_keys
from inventiv.settings import Settings
from inventiv.worker_secrets import WorkerSecrets, worker_secrets
from providers.base import Provider
from scheduler.single_flight import SingleFlight

log = logging.getLogger(__name__)

ProviderFactory = Callable[[str, Settings], Provider]


def _registry_factory(code: str, settings: Settings) -> Provider:
    from providers.registry import create_provider

    return create_provider(code, settings)


class ProviderSet:
    """One provider object per provider code, made on first use and closed together."""

    def __init__(self, settings: Settings, factory: ProviderFactory | None = None) -> None:
        self._settings = settings
        self._factory = factory or _registry_factory
        self._providers: dict[str, Provider] = {}

    def get(self, code: str) -> Provider:
        provider = self._providers.get(code)
        if provider is None:
            provider = self._providers[code] = self._factory(code, self._settings)
        return provider

    async def close(self) -> None:
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            try:
                await provider.close()
            except Exception:
                log.exception("closing a provider failed", extra={"provider": provider.code})


@dataclass
class Runtime:
    settings: Settings
    pool: aiopg.Pool
    redis: aioredis.Redis
    providers: ProviderSet
    http: aiohttp.ClientSession
    # Boot images resolved through the catalog, per (provider, zone, type): resolving costs a few calls,
    # and concurrent first passes of one type share a single resolution.
    boot_images: dict[tuple[str, str, str], str] = field(default_factory=dict)
    boot_image_flights: SingleFlight[tuple[str, str, str], str | None] = field(default_factory=SingleFlight)
    # Derived from settings: a scheduler without the worker secret key refuses to start.
    secrets: WorkerSecrets = field(init=False)

    def __post_init__(self) -> None:
        self.secrets = worker_secrets(self.settings)

    async def workers_changed(self, instance_id: str) -> None:
        """Tell the gateways a routing field changed; best-effort, since they poll every second anyway."""
        try:
            await self.redis.publish(redis_keys.key(self.settings, redis_keys.WORKERS_CHANGED), instance_id)
        except (RedisError, OSError):
            log.warning("could not publish a worker change", extra={"instance_id": instance_id})

    async def close(self) -> None:
        await self.providers.close()
        await self.http.close()
