"""The work loop: claim instances that have something left to do, run one pass on each, hand them back.

The claim is the single gate (see sql/queries/instances/scheduler.sql): it names the pass that holds it,
and no other claim (this driver's interval job, a command's wake-up, another scheduler) can take an
instance whose claim has not run out. A pass renews its claim while it runs (`scheduler.lease`) and is
stopped if it loses it, so one instance never has two passes. The pass ends by handing the claim back
with when the instance is due again. A pass that fails is retried with backoff, or fails the instance
when the error says retrying is useless; a provisioning pass past its deadline fails it. Failed
instances are then released like terminated ones, so whatever was created is cleaned up.

Throughput does not depend on the tick: when a claim filled every free slot, more work may be due, so
each pass that ends claims again at once instead of waiting for the next tick.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from inventiv.action_types import ActionType
from inventiv.logs import correlation_id
from inventiv.statuses import InstanceStatus
from scheduler import action_log, metrics, provisioning, termination
from scheduler.failure import fail_instance
from scheduler.lease import Claim, keep_claim
from scheduler.retry import Disposition, backoff_s, classify, error_fields, retry_logged
from scheduler.runtime import Runtime
from scheduler.work import PROVISIONING_STATUSES, RELEASE_STATUSES, InstanceWork, Pass, load_work
from sql.queries import fetch_all, queries

log = logging.getLogger(__name__)

# Passes running at once in one scheduler: enough for a burst of deployments, few enough that the pool
# (10 connections) and the cloud's rate limits are not swamped.
MAX_CONCURRENT_PASSES = 32
# How long close() lets running passes finish before cancelling them (a cancelled pass resumes later).
_CLOSE_GRACE_S = 10.0
# A pass stopped mid-way (shutdown, a lost claim) hands its claim back within this, or leaves it to run out.
_RELEASE_ON_STOP_S = 2.0
# How a stopped pass hands its claim back: no row has status "", so the instance is due again at once.
_DUE_NOW = Pass("", 0.0)


class Driver:
    def __init__(self, rt: Runtime, rng: random.Random | None = None) -> None:
        self.rt = rt
        self._rng = rng or random.Random()
        self._running: dict[str, asyncio.Task[None]] = {}
        # Set when the last claim filled every free slot: more may be due, so a pass that ends claims again.
        self._more_due = False
        self._refill: asyncio.Task[list[str]] | None = None
        self._closing = False

    @property
    def running(self) -> frozenset[str]:
        return frozenset(self._running)

    async def start_due(self) -> list[str]:
        """Claim what is due and start a pass on each in the background; returns the claimed ids.

        The interval job calls this: it returns at once, so one slow cloud call never delays the others.
        """
        room = MAX_CONCURRENT_PASSES - len(self._running)
        if room <= 0 or self._closing:
            return []
        taken_at = time.monotonic()
        async with self.rt.pool.acquire() as conn:
            rows = await fetch_all(
                queries.instances.claim_due_instances(conn, lease_s=self.rt.settings.scheduler_lease_s, limit=room)
            )
        self._more_due = len(rows) >= room
        claims = [Claim(str(row["id"]), str(row["claim_token"]), taken_at) for row in rows]
        for claim in claims:
            self._spawn(claim)
        return [claim.instance_id for claim in claims]

    async def run_due(self) -> list[str]:
        """Claim what is due and run a pass on each, returning when they are done (tests, commands)."""
        ids = await self.start_due()
        await self.wait(ids)
        return ids

    async def start(self, instance_id: str) -> asyncio.Task[None] | None:
        """Start a pass on this instance now (a command asked); None if it is busy or has nothing to do."""
        if instance_id in self._running or self._closing:
            return None
        taken_at = time.monotonic()
        async with self.rt.pool.acquire() as conn:
            row = await queries.instances.claim_instance_now(
                conn, instance_id=instance_id, lease_s=self.rt.settings.scheduler_lease_s
            )
        if row is None:
            return None
        return self._spawn(Claim(instance_id, str(row["claim_token"]), taken_at))

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
        self._closing = True
        if self._refill is not None:
            await asyncio.gather(self._refill, return_exceptions=True)
        tasks = list(self._running.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=_CLOSE_GRACE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _spawn(self, claim: Claim) -> asyncio.Task[None]:
        instance_id = claim.instance_id
        # Only a claim that another pass could not hold gets here; a task still listed under this id is
        # one whose pass already handed its claim back and is only finishing.
        task = asyncio.create_task(self._pass(claim), name=f"pass-{instance_id}")
        keeper = asyncio.create_task(
            keep_claim(self.rt.pool, claim, self.rt.settings.scheduler_lease_s, lambda why: _stop(task, claim, why)),
            name=f"claim-{instance_id}",
        )
        self._running[instance_id] = task

        def done(_: asyncio.Task[None]) -> None:
            keeper.cancel()
            if self._running.get(instance_id) is task:
                del self._running[instance_id]
            self._claim_more()

        task.add_done_callback(done)
        return task

    def _claim_more(self) -> None:
        if not self._more_due or self._closing or (self._refill is not None and not self._refill.done()):
            return
        self._more_due = False
        self._refill = asyncio.create_task(self._refill_now(), name="claim-more")

    async def _refill_now(self) -> list[str]:
        try:
            return await self.start_due()
        except Exception:
            # The next tick claims again; a database blip here loses nothing.
            log.warning("claiming more due work failed", exc_info=True)
            return []

    async def _pass(self, claim: Claim) -> None:
        instance_id = claim.instance_id
        token = correlation_id.set(instance_id)
        try:
            work = await load_work(self.rt.pool, self.rt.settings, instance_id)
            if work is None:
                return
            await action_log.close_interrupted(self.rt.pool, instance_id)
            try:
                outcome = await _run(self.rt, work)
                progressed = True
                metrics.PASSES.labels("waiting" if outcome.waiting else "progressed").inc()
            except Exception as exc:
                outcome = await self._after_error(work, exc)
                progressed = False
                metrics.PASSES.labels("failed" if outcome.status == InstanceStatus.FAILED else "retry").inc()
            await self._release(claim, outcome, progressed=progressed)
        except asyncio.CancelledError:
            # Stopped mid-way (shutdown, or the claim was lost): hand the claim back if it is still ours,
            # so the next pass (here or on another scheduler) need not wait for it to run out.
            await self._release_on_stop(claim)
            raise
        except Exception:
            # The database itself failed: the claim's lease runs out and another pass picks it up.
            log.exception("scheduler pass failed", extra={"instance_id": instance_id})
        finally:
            correlation_id.reset(token)

    async def _release(self, claim: Claim, outcome: Pass, *, progressed: bool) -> None:
        async with self.rt.pool.acquire() as conn:
            await queries.instances.release_instance_claim(
                conn,
                instance_id=claim.instance_id,
                claim_token=claim.token,
                status=outcome.status,
                delay_s=outcome.delay_s,
                progressed=progressed,
                waiting=outcome.waiting,
                stepped=outcome.stepped,
            )

    async def _release_on_stop(self, claim: Claim) -> None:
        try:
            async with asyncio.timeout(_RELEASE_ON_STOP_S):
                await asyncio.shield(self._release(claim, _DUE_NOW, progressed=False))
        except (Exception, asyncio.CancelledError):
            log.warning("could not hand back the claim of a stopped pass", extra={"instance_id": claim.instance_id})

    async def _after_error(self, work: InstanceWork, exc: Exception) -> Pass:
        code, message = error_fields(exc)
        if work.status in PROVISIONING_STATUSES and classify(exc) is Disposition.FAIL:
            await fail_instance(self.rt, work.id, exc)
            return Pass(InstanceStatus.FAILED, 0.0)
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
        if work.status in RELEASE_STATUSES:
            await _release_retry(self.rt, work, exc, delay)
        return Pass(work.status, delay)


async def _release_retry(rt: Runtime, work: InstanceWork, exc: Exception, delay: float) -> None:
    """A release that failed must not wait silently (a cloud that cannot be reached, its credentials
    missing or refused): count it, and log the attempt with its error (the first few, then fewer)."""
    code, _ = error_fields(exc)
    metrics.RELEASE_RETRIES.labels(code).inc()
    attempt = work.attempts + 1
    if retry_logged(attempt):
        await action_log.record(
            rt.pool, work.id, ActionType.RELEASE_RETRY, error=exc, attempt=attempt, retry_in_s=round(delay, 1)
        )


def _stop(task: asyncio.Task[None], claim: Claim, why: str) -> None:
    log.warning("stopping a pass that no longer holds its claim", extra={"instance_id": claim.instance_id, "why": why})
    task.cancel()


async def _run(rt: Runtime, work: InstanceWork) -> Pass:
    if work.status in PROVISIONING_STATUSES:
        return await provisioning.advance(rt, work)
    # A terminating instance is always released, even one whose cleanup after a failure had already set
    # deleted_at: the release then finds nothing left and ends it `terminated`.
    if work.status == InstanceStatus.TERMINATING or (work.status in RELEASE_STATUSES and work.deleted_at is None):
        return await termination.advance(rt, work)
    return Pass(work.status, 0.0)
