"""Keeping a claim while its pass runs.

A claim (see sql/queries/instances/scheduler.sql) is the single gate to an instance's work and lasts
`lease_s`. A pass that runs longer renews it every third of the lease; when the claim turns out to be
someone else's, or cannot be renewed before it runs out (Postgres unreachable), the pass is stopped: a
pass that went on past its lease could meet a second one that claimed the instance meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiopg

from inventiv.cancellation import being_cancelled
from sql.queries import queries

log = logging.getLogger(__name__)

# Renewals per lease: a renewal that fails (a database blip) leaves two more tries before the lease ends.
RENEWALS_PER_LEASE = 3


@dataclass(frozen=True, slots=True)
class Claim:
    instance_id: str
    token: str
    # time.monotonic() before the claim was asked for: the lease runs out no earlier than this + lease_s.
    taken_at: float


def must_stop(now: float, confirmed_until: float, renew_every_s: float) -> bool:
    """True when the lease may run out before the next renewal could confirm it."""
    return now + renew_every_s >= confirmed_until


async def keep_claim(pool: aiopg.Pool, claim: Claim, lease_s: float, stop: Callable[[str], None]) -> None:
    """Renew `claim` until cancelled; call `stop(reason)` and return once it is lost or may be."""
    every = lease_s / RENEWALS_PER_LEASE
    confirmed_until = claim.taken_at + lease_s
    while True:
        await asyncio.sleep(every)
        asked_at = time.monotonic()
        try:
            async with pool.acquire() as conn:
                row = await queries.instances.renew_instance_claim(
                    conn, instance_id=claim.instance_id, claim_token=claim.token, lease_s=lease_s
                )
        except Exception as exc:
            if being_cancelled():
                raise asyncio.CancelledError from exc
            if must_stop(time.monotonic(), confirmed_until, every):
                stop(f"the claim could not be renewed before it runs out: {exc}")
                return
            log.warning("could not renew a claim; trying again", extra={"instance_id": claim.instance_id})
            continue
        if row is None:
            stop("the claim was taken by another pass")
            return
        confirmed_until = asked_at + lease_s
