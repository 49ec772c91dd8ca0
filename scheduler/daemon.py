"""The scheduler daemon: APScheduler interval jobs that run only while this process is the leader."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from inventiv.services import open_pool, redis_client
from inventiv.settings import Settings
from scheduler import metrics
from scheduler.jobs import Closer, Job, Jobs, build_jobs
from scheduler.leader import LeaderLock

log = logging.getLogger(__name__)

# On SIGTERM, running jobs get this long to finish before they are cancelled (a cancelled pass resumes
# on the next leader's claim; the commands job blocks at most a second).
STOP_GRACE_S = 10.0

@dataclass
class Daemon:
    settings: Settings
    leader: LeaderLock
    jobs: dict[str, tuple[Job, float]] = field(default_factory=dict)
    # Run in order on exit, after the jobs stopped: what the jobs opened (passes, providers, sessions).
    closers: list[Closer] = field(default_factory=list)
    is_leader: bool = False
    _running: set[asyncio.Task[Any]] = field(default_factory=set)

    def install(self, made: Jobs) -> None:
        """Schedule these jobs (at the next `schedule`) and close what they opened on exit."""
        self.jobs.update(made.every)
        self.closers += made.closers

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
            task = asyncio.current_task()
            assert task is not None, "APScheduler runs coroutine jobs as tasks"
            self._running.add(task)
            try:
                await job()
            except Exception:
                log.exception("job failed", extra={"job": name})
            finally:
                self._running.discard(task)

        return run

    async def drain(self, timeout_s: float) -> None:
        """Wait for the jobs running now to finish (no new ones start once the scheduler is paused)."""
        if self._running:
            await asyncio.wait(list(self._running), timeout=timeout_s)

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
    async with open_pool(settings) as pool, metrics.serving(settings.gateway_host, settings.scheduler_metrics_port):
        redis = redis_client(settings)
        try:
            daemon.install(await build_jobs(settings, pool, redis))
            scheduler = AsyncIOScheduler(event_loop=loop)
            daemon.schedule(scheduler)
            await daemon.elect()
            scheduler.start()
            log.info("scheduler running", extra={"leader": daemon.is_leader, "jobs": sorted(daemon.jobs)})
            await stop.wait()
            scheduler.pause()
            await daemon.drain(STOP_GRACE_S)
            scheduler.shutdown(wait=False)
        finally:
            await daemon.close()
            await daemon.leader.release()
            await redis.aclose()
    return 0
