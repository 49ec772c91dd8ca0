"""Waiting in a test until something done in the background has happened: one helper, not a loop per test.

`wait_until(predicate, timeout_s=..., what=...)` calls the predicate (sync or async) until it returns
something truthy, and returns that. An exception raised by the predicate counts as "not yet" and is
retried. When the time is up it raises AssertionError naming `what` and the last value or exception
seen, so that a failed wait says what it waited for and where things stood.

A predicate that sees something that will never get better stops the wait at once with `pytest.fail()`
(a BaseException, so not retried). `wait_until_sync` is the same for code without an event loop (a
thread, a fixture that drives a subprocess).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

# Often enough that a test goes on soon after the condition holds, seldom enough that a predicate
# which queries Postgres or Redis does not keep a shared CI machine busy.
INTERVAL_S = 0.05


@overload
async def wait_until(
    predicate: Callable[[], Awaitable[T]], *, timeout_s: float, interval_s: float = ..., what: str = ...
) -> T: ...


@overload
async def wait_until(
    predicate: Callable[[], T], *, timeout_s: float, interval_s: float = ..., what: str = ...
) -> T: ...


async def wait_until(
    predicate: Callable[[], Any], *, timeout_s: float, interval_s: float = INTERVAL_S, what: str = "the condition"
) -> Any:
    """The predicate's first truthy value; AssertionError once `timeout_s` passed without one."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            value = exc
        else:
            if value:
                return value
        # Checked after the attempt: the predicate runs at least once, and once more at the deadline.
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout_s, value)
        await asyncio.sleep(interval_s)


def wait_until_sync(
    predicate: Callable[[], T], *, timeout_s: float, interval_s: float = INTERVAL_S, what: str = "the condition"
) -> T:
    """`wait_until` for a blocking predicate, sleeping the thread between attempts."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value: Any = predicate()
        except Exception as exc:
            value = exc
        else:
            if value:
                return value  # type: ignore[no-any-return]
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout_s, value)
        time.sleep(interval_s)


def _timed_out(what: str, timeout_s: float, last: object) -> AssertionError:
    seen = f"raised {last!r}" if isinstance(last, Exception) else f"returned {last!r}"
    error = AssertionError(f"timed out after {timeout_s} s waiting for {what}; the last check {seen}")
    if isinstance(last, Exception):
        error.__cause__ = last
    return error
