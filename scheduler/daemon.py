"""The scheduler daemon: APScheduler interval jobs that run only while this process is the leader."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from inventiv.services import open_pool, redis_client
from inventiv.settings import Settings
from scheduler.leader import LeaderLock

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]
Closer = Callable[[], Awaitable[None]]


@dataclass
class Daemon:
    settings: Settings
    leader: LeaderLock
    jobs: dict[str, tuple[Job, float]] = field(default_factory=dict)
    # Run in order on exit, after the jobs stopped: what the jobs opened (passes, providers, sessions).
    closers: list[Closer] = field(default_factory=list)
    is_leader: bool = False

    async def elect(self) -> None:
        was = self.is_leader
        self.is_leader = await self.leader.try_acquire()
        if was and not self.is_leader:
            log.warning("no longer the leader; standing by")

    def guarded(self, name: str, job: Job) -> Job:
        """Run the job only while leader; log and swallow its errors so the interval goes on."""

        async def run() -> None:
            if not self.is_leader:
                return
            try:
                await job()
            except Exception:
                log.exception("job failed", extra={"job": name})

        return run

    async def close(self) -> None:
        for closer in self.closers:
            try:
                await closer()
            except Exception:
                log.exception("closing the scheduler failed")

    def schedule(self, scheduler: AsyncIOScheduler) -> None:
        tick = self.settings.scheduler_tick_s
        scheduler.add_job(self.elect, "interval", seconds=tick, id="elect", max_instances=1, coalesce=True)
        for name, (job, every) in self.jobs.items():
            # Jitter spreads several schedulers' polls; a tenth of the interval keeps the cadence.
            scheduler.add_job(
                self.guarded(name, job),
                "interval",
                seconds=every,
                jitter=every / 10,
                id=name,
                max_instances=1,
                coalesce=True,
            )


async def run_daemon(settings: Settings) -> int:
    assert settings.database_url is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    daemon = Daemon(settings, LeaderLock(settings.database_url))
    async with open_pool(settings) as pool:
        redis = redis_client(settings)
        try:
            from scheduler.jobs import register_jobs

            await register_jobs(daemon, pool, redis)
            scheduler = AsyncIOScheduler(event_loop=loop)
            daemon.schedule(scheduler)
            await daemon.elect()
            scheduler.start()
            log.info("scheduler running", extra={"leader": daemon.is_leader, "jobs": sorted(daemon.jobs)})
            await stop.wait()
            scheduler.shutdown(wait=False)
        finally:
            await daemon.close()
            await daemon.leader.release()
            await redis.aclose()
    return 0
