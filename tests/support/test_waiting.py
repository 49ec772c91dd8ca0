"""waiting: the value comes back once truthy; a timeout names what was awaited and the last thing seen."""

from __future__ import annotations

import threading
import time

import pytest
from waiting import wait_until, wait_until_sync


def _counter(values: list[object]) -> tuple[list[int], object]:
    """A predicate returning `values` one per call (the last one from then on), and its call count."""
    calls = [0]

    def predicate() -> object:
        calls[0] += 1
        return values[min(calls[0], len(values)) - 1]

    return calls, predicate


async def test_a_sync_predicate_is_polled_until_truthy_and_its_value_returned() -> None:
    calls, predicate = _counter([None, 0, "", {"status": "ready"}])
    assert await wait_until(predicate, timeout_s=5, interval_s=0.001) == {"status": "ready"}
    assert calls == [4]


async def test_an_async_predicate_is_awaited() -> None:
    seen: list[int] = []

    async def predicate() -> list[int] | None:
        seen.append(len(seen))
        return seen if len(seen) == 3 else None

    assert await wait_until(predicate, timeout_s=5, interval_s=0.001) == [0, 1, 2]


async def test_a_timeout_names_what_was_awaited_and_the_last_value() -> None:
    _, predicate = _counter([False, []])
    started = time.monotonic()
    with pytest.raises(AssertionError) as failed:
        await wait_until(predicate, timeout_s=0.1, interval_s=0.01, what="the usage row")
    assert time.monotonic() - started >= 0.1
    assert str(failed.value) == "timed out after 0.1 s waiting for the usage row; the last check returned []"


async def test_an_exception_is_retried_until_it_stops() -> None:
    _, predicate = _counter([ConnectionRefusedError, ConnectionRefusedError, 200])

    def call() -> object:
        value = predicate()
        if value is ConnectionRefusedError:
            raise ConnectionRefusedError("not listening yet")
        return value

    assert await wait_until(call, timeout_s=5, interval_s=0.001) == 200


async def test_an_exception_until_the_deadline_is_reported_with_its_cause() -> None:
    calls = [0]

    async def predicate() -> bool:
        calls[0] += 1
        raise KeyError(f"attempt {calls[0]}")

    with pytest.raises(AssertionError) as failed:
        await wait_until(predicate, timeout_s=0.05, interval_s=0.01, what="the worker")
    assert calls[0] > 1, "retried"
    assert str(failed.value).endswith(f"waiting for the worker; the last check raised KeyError('attempt {calls[0]}')")
    assert isinstance(failed.value.__cause__, KeyError)


async def test_pytest_fail_in_the_predicate_stops_the_wait_at_once() -> None:
    calls = [0]

    def predicate() -> bool:
        calls[0] += 1
        pytest.fail("the process exited")

    with pytest.raises(pytest.fail.Exception, match="the process exited"):
        await wait_until(predicate, timeout_s=5, interval_s=0.001)
    assert calls == [1]


def test_the_sync_twin_waits_for_another_thread() -> None:
    done = threading.Event()
    threading.Timer(0.05, done.set).start()
    assert wait_until_sync(done.is_set, timeout_s=5, interval_s=0.005, what="the thread") is True


def test_the_sync_twin_reports_a_timeout_and_retries_exceptions() -> None:
    calls = [0]

    def predicate() -> bool:
        calls[0] += 1
        if calls[0] % 2:
            raise OSError("busy")
        return False

    with pytest.raises(
        AssertionError, match=r"waiting for the device to detach; the last check (returned False|raised)"
    ):
        wait_until_sync(predicate, timeout_s=0.05, interval_s=0.005, what="the device to detach")
    assert calls[0] > 2
