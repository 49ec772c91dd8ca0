"""The scheduler's interval jobs, registered on the daemon."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import aiopg
import redis.asyncio as aioredis

from inventiv.worker_secrets import worker_secrets
from scheduler.commands import CommandConsumer
from scheduler.driver import Driver
from scheduler.health import check_ready_workers
from scheduler.reconcile import reconcile_volumes
from scheduler.replacement import retire_dead_workers
from scheduler.runtime import ProviderFactory, ProviderSet, Runtime
from scheduler.sweep import sweep_orphans

if TYPE_CHECKING:
    from scheduler.daemon import Daemon


async def register_jobs(
    daemon: Daemon, pool: aiopg.Pool, redis: aioredis.Redis, provider_factory: ProviderFactory | None = None
) -> Runtime:
    """Register every interval job on the daemon, and what to close on exit; returns the shared runtime."""
    settings = daemon.settings
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

    daemon.jobs.update(
        provisioning=(drive, settings.scheduler_tick_s),
        commands=(consume, settings.scheduler_tick_s),
        health=(health, settings.health_interval_s),
        reconcile=(reconcile, settings.reconcile_interval_s),
        orphan_sweep=(sweep, settings.orphan_sweep_interval_s),
    )
    # Passes first (they use the providers), then the providers and the HTTP session.
    daemon.closers += [driver.close, commands.settle, rt.close]
    return rt
