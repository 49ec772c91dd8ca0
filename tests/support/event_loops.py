"""Running a test on asyncio's own event loop and on uvloop (the gateway's).

For code that drives transports and protocols itself (the upstream client, the relay): the two loops'
transports differ in how they report EOF, pause reading and take writes.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run_on(loop: str, coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` on a new loop of that kind; an error a loop callback swallowed fails the test too."""
    swallowed: list[str] = []

    def note(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # Only text is kept: holding the exception would keep its frames, and the transports they
        # reference, alive past the test.
        swallowed.append(f"{context.get('message')}: {context.get('exception')!r}")

    try:
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.get_loop().set_exception_handler(note)
            runner.run(coro)
    finally:
        # A transport leaked by a failure is reported now, against this test, not a later one.
        gc.collect()
    assert not swallowed, f"the event loop swallowed errors: {swallowed}"


def on_both_loops(scenario: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[str], None]:
    """A test that runs the coroutine function `scenario` once on each loop."""

    @pytest.mark.parametrize("loop", list(LOOPS))
    def test(loop: str) -> None:
        run_on(loop, scenario())

    test.__name__ = scenario.__name__
    test.__doc__ = scenario.__doc__
    return test
