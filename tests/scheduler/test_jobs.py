"""build_jobs: the interval jobs and their closers come back as a value, which the daemon installs."""

from __future__ import annotations

import aiopg
import redis.asyncio as aioredis
from memory_provider import MemoryProvider

from inventiv.settings import Settings
from scheduler.daemon import Daemon
from scheduler.jobs import build_jobs
from scheduler.leader import LeaderLock


async def test_the_jobs_and_what_closes_them_are_returned_and_installed(
    settings: Settings, database_url: str, db_pool: aiopg.Pool, redis: aioredis.Redis
) -> None:
    made = await build_jobs(settings, db_pool, redis, lambda code, s: MemoryProvider(code))
    daemon = Daemon(settings, LeaderLock(database_url))
    daemon.install(made)
    await daemon.close()

    assert {name: every for name, (_, every) in made.every.items()} == {
        "provisioning": settings.scheduler_tick_s,
        "commands": settings.scheduler_tick_s,
        "health": settings.health_interval_s,
        "reconcile": settings.reconcile_interval_s,
        "orphan_sweep": settings.orphan_sweep_interval_s,
    }
    assert daemon.jobs == made.every and daemon.closers == made.closers
    assert made.runtime.http.closed, "the daemon's close ran the closers, the runtime's last"
