"""The work loop: claim instances that have something left to do, run one pass on each, hand them back.

Claims push `next_attempt_at` past a lease under FOR UPDATE SKIP LOCKED, so no two passes (of this
process or another scheduler) work on one instance at once; the pass ends by setting when the instance
is due again. A pass that fails is retried with backoff, or fails the instance when the error says
retrying is useless; a provisioning pass past its deadline fails it. Failed instances are then released
like terminated ones, so whatever was created is cleaned up.
"""

from __future__ import annotations

import asyncio
import logging
import random

from inventiv.logs import correlation_id
from scheduler import action_log, provisioning, termination
from scheduler.retry import Disposition, backoff_s, classify, error_fields
from scheduler.runtime import Runtime
from scheduler.work import PROVISIONING_STATUSES, RELEASE_STATUSES, InstanceWork, Pass, load_work
from sql.queries import fetch_all, queries

log = logging.getLogger(__name__)

# Passes running at once in one scheduler: enough for a burst of deployments, few enough that the pool
# (10 connections) and the cloud's rate limits are not swamped.
MAX_CONCURRENT_PASSES = 32
# How long close() lets running passes finish before cancelling them (a cancelled pass resumes later).
_CLOSE_GRACE_S = 10.0


class Driver:
    def __init__(self, rt: Runtime, rng: random.Random | None = None) -> None:
        self.rt = rt
        self._rng = rng or random.Random()
        self._running: dict[str, asyncio.Task[None]] = {}

    @property
    def running(self) -> frozenset[str]:
        return frozenset(self._running)

    async def start_due(self) -> list[str]:
        """Claim what is due and start a pass on each in the background; returns the claimed ids.

        The interval job calls this: it returns at once, so one slow cloud call never delays the others.
        """
        room = MAX_CONCURRENT_PASSES - len(self._running)
        if room <= 0:
            return []
        async with self.rt.pool.acquire() as conn:
            rows = await fetch_all(
                queries.instances.claim_due_instances(
                    conn, lease_s=self.rt.settings.scheduler_lease_s, limit=room, exclude=list(self._running)
                )
            )
        ids = [str(row["id"]) for row in rows]
        for instance_id in ids:
            self._spawn(instance_id)
        return ids

    async def run_due(self) -> list[str]:
        """Claim what is due and run a pass on each, returning when they are done (tests, commands)."""
        ids = await self.start_due()
        await self.wait(ids)
        return ids

    async def start(self, instance_id: str) -> asyncio.Task[None] | None:
        """Start a pass on this instance now (a command asked); None if it is busy or has nothing to do."""
        if instance_id in self._running:
            return None
        async with self.rt.pool.acquire() as conn:
            claimed = await queries.instances.claim_instance_now(
                conn, instance_id=instance_id, lease_s=self.rt.settings.scheduler_lease_s
            )
        if claimed is None:
            return None
        return self._spawn(instance_id)

    async def wake(self, instance_id: str) -> bool:
        """Run a pass on this instance now and wait for it; False if it is busy or has nothing to do."""
        task = await self.start(instance_id)
        if task is None:
            return False
        await asyncio.gather(task, return_exceptions=True)
        return True

    async def wait(self, ids: list[str]) -> None:
        tasks = [self._running[i] for i in ids if i in self._running]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._running.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=_CLOSE_GRACE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _spawn(self, instance_id: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._pass(instance_id), name=f"pass-{instance_id}")
        self._running[instance_id] = task
        task.add_done_callback(lambda _: self._running.pop(instance_id, None))
        return task

    async def _pass(self, instance_id: str) -> None:
        token = correlation_id.set(instance_id)
        try:
            work = await load_work(self.rt.pool, self.rt.settings, instance_id)
            if work is None:
                return
            await action_log.close_interrupted(self.rt.pool, instance_id)
            try:
                outcome = await _run(self.rt, work)
            except Exception as exc:
                outcome = await self._after_error(work, exc)
            async with self.rt.pool.acquire() as conn:
                await queries.instances.release_instance_claim(
                    conn, instance_id=instance_id, status=outcome.status, delay_s=outcome.delay_s
                )
        except Exception:
            # The database itself failed: the claim's lease runs out and another pass picks it up.
            log.exception("scheduler pass failed", extra={"instance_id": instance_id})
        finally:
            correlation_id.reset(token)

    async def _after_error(self, work: InstanceWork, exc: Exception) -> Pass:
        code, message = error_fields(exc)
        if work.status in PROVISIONING_STATUSES and classify(exc) is Disposition.FAIL:
            await fail_instance(self.rt, work.id, exc)
            return Pass("failed", 0.0)
        settings = self.rt.settings
        delay = backoff_s(
            work.attempts + 1, settings.scheduler_retry_base_s, settings.scheduler_retry_max_s, self._rng.random()
        )
        if code == "INTERNAL_ERROR":
            log.error("step failed unexpectedly; retrying", exc_info=exc, extra={"instance_id": work.id})
        else:
            log.warning(
                "step failed; retrying",
                extra={"instance_id": work.id, "error_code": code, "error": message, "retry_in_s": round(delay, 1)},
            )
        async with self.rt.pool.acquire() as conn:
            await queries.instances.record_instance_retry(
                conn, instance_id=work.id, error_code=code, error_message=message
            )
        return Pass(work.status, delay)


async def _run(rt: Runtime, work: InstanceWork) -> Pass:
    if work.status in PROVISIONING_STATUSES:
        return await provisioning.advance(rt, work)
    if work.status in RELEASE_STATUSES and work.deleted_at is None:
        return await termination.advance(rt, work)
    return Pass(work.status, 0.0)


async def fail_instance(rt: Runtime, instance_id: str, exc: BaseException) -> None:
    """Mark the instance failed (its release then cleans up what it holds) and say why."""
    code, message = error_fields(exc)
    async with rt.pool.acquire() as conn:
        changed = await queries.instances.mark_instance_failed(
            conn, instance_id=instance_id, error_code=code, error_message=message
        )
    if not changed:
        return
    log.warning("instance failed", extra={"instance_id": instance_id, "error_code": code, "error": message})
    await action_log.close_span(rt.pool, instance_id, "HEALTH_CHECK", exc)
    await action_log.record(rt.pool, instance_id, "INSTANCE_FAILED", error=exc)
    await rt.workers_changed(instance_id)
