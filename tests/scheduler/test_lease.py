"""Keeping a claim: when a pass must stop, decided from the lease alone, and the renewal loop around it.

The loop's clock and sleep are replaced by a fake clock that moves only when it sleeps, and the database
by a script of answers, so each case is exact and instant.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from scheduler import lease
from scheduler.lease import Claim, keep_claim, must_stop

LEASE_S = 3.0
ROW = {"claim_token": "t"}


@pytest.mark.parametrize(
    ("now", "confirmed_until", "stop"),
    [
        (0.0, 30.0, False),  # two renewals before the lease runs out
        (19.9, 30.0, False),  # the next renewal still lands before it runs out
        (20.0, 30.0, True),  # the next renewal would land just as it runs out
        (31.0, 30.0, True),  # already run out
    ],
)
def test_a_pass_stops_when_the_next_renewal_could_come_too_late(now: float, confirmed_until: float, stop: bool) -> None:
    assert must_stop(now, confirmed_until, renew_every_s=10.0) is stop


class _Database:
    """Renewals answered from a script: a row (renewed), None (someone else's claim), or an error.

    It stands in for both the pool and `queries`: the connection it yields is what the renewal returns.
    """

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.asked = 0
        self.instances = SimpleNamespace(renew_instance_claim=self._renew)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        self.asked += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        yield answer

    async def _renew(self, conn: Any, **params: Any) -> Any:
        return conn


@pytest.fixture(autouse=True)
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Time moves only when the loop sleeps, by exactly what it asked for."""
    clock = SimpleNamespace(now=0.0)

    async def sleep(seconds: float) -> None:
        clock.now += seconds
        await asyncio.sleep(0)

    monkeypatch.setattr(lease, "time", SimpleNamespace(monotonic=lambda: clock.now))
    monkeypatch.setattr(lease, "asyncio", SimpleNamespace(sleep=sleep, CancelledError=asyncio.CancelledError))


async def _keep(db: _Database, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run keep_claim in a task of its own (one test cancels it) on a claim taken at 0 s; the reasons it stopped."""
    monkeypatch.setattr(lease, "queries", db)
    stops: list[str] = []
    await asyncio.create_task(keep_claim(db, Claim("i-1", "t", taken_at=0.0), LEASE_S, stops.append))  # type: ignore[arg-type]
    return stops


async def test_an_unreachable_database_is_retried_then_the_pass_stops_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    db = _Database([OSError("connection refused")] * 5)
    stops = await _keep(db, monkeypatch)
    # At 1 s the lease (3 s) leaves room for another try; at 2 s the next one would come too late.
    assert db.asked == 2
    assert len(stops) == 1 and stops[0].startswith("the claim could not be renewed before it runs out")


async def test_each_renewal_moves_the_end_of_the_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    db = _Database([ROW, ROW, ROW, OSError("refused"), OSError("refused"), OSError("refused")])
    stops = await _keep(db, monkeypatch)
    # Renewed at 1, 2 and 3 s: the lease ends at 6 s, so the failure at 4 s is tried again and 5 s stops.
    # Without the renewals moving it, the first failure would stop the pass.
    assert db.asked == 5
    assert stops[0].startswith("the claim could not be renewed")


async def test_a_claim_taken_by_another_pass_stops_this_one_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    db = _Database([ROW, None])
    assert await _keep(db, monkeypatch) == ["the claim was taken by another pass"]
    assert db.asked == 2


class _CancelledMidCall(_Database):
    """A driver that, cancelled during the call, raises its own error: the CancelledError is consumed."""

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        self.asked += 1
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise OSError("connection closed mid-call") from None
        yield None  # not reached: the cancellation arrives at the sleep


async def test_a_cancellation_turned_into_a_database_error_still_cancels(monkeypatch: pytest.MonkeyPatch) -> None:
    # Retrying it as a blip would keep a stopped pass renewing its claim.
    db = _CancelledMidCall([])
    with pytest.raises(asyncio.CancelledError):
        await _keep(db, monkeypatch)
    assert db.asked == 1
