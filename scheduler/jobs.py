"""The scheduler's interval jobs and what to close after them: built here, installed by the daemon."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import aiopg
import redis.asyncio as aioredis

from inventiv.settings import Settings
from inventiv.worker_secrets import worker_secrets
from scheduler.commands import CommandConsumer
from scheduler.driver import Driver
from scheduler.health import check_ready_workers
from scheduler.reconcile import reconcile_volumes
from scheduler.replacement import retire_dead_workers
from scheduler.runtime import ProviderFactory, ProviderSet, Runtime
from scheduler.sweep import sweep_orphans

Job = Callable[[], Awaitable[None]]
Closer = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Jobs:
    """What build_jobs made: each job with its interval in seconds, and the closers to run in order on exit,
    after the jobs stopped (what the jobs opened: passes, providers, sessions)."""

    every: dict[str, tuple[Job, float]]
    closers: list[Closer]
    runtime: Runtime


async def build_jobs(
    settings: Settings, pool: aiopg.Pool, redis: aioredis.Redis, provider_factory: ProviderFactory | None = None
) -> Jobs:
    """Every interval job on one shared runtime, and what to close on exit (async: the runtime's HTTP session
    belongs to the running loop)."""
    worker_secrets(settings)  # refused before anything is opened when the key is missing
    rt = Runtime(settings, pool, redis, ProviderSet(settings, provider_factory), aiohttp.ClientSession())
    driver = Driver(rt)
    # A read blocks at most half a tick, so the job is done before its next run is due.
    commands = CommandConsumer(rt, driver, block_ms=max(1, min(1000, int(settings.scheduler_tick_s * 500))))

    async def drive() -> None:
        await driver.start_due()

    async def consume() -> None:
        await commands.poll()

    async def health() -> None:
        await check_ready_workers(rt)
        await retire_dead_workers(rt)

    async def reconcile() -> None:
        await reconcile_volumes(rt)

    async def sweep() -> None:
        await sweep_orphans(rt)

    every: dict[str, tuple[Job, float]] = {
        "provisioning": (drive, settings.scheduler_tick_s),
        "commands": (consume, settings.scheduler_tick_s),
        "health": (health, settings.health_interval_s),
        "reconcile": (reconcile, settings.reconcile_interval_s),
        "orphan_sweep": (sweep, settings.orphan_sweep_interval_s),
    }
    # Passes first (they use the providers), then the providers and the HTTP session.
    return Jobs(every, [driver.close, commands.settle, rt.close], rt)
