"""Stepping a coroutine by hand, as an asyncio Task would, from code that may not await.

The relay writes to the client from the worker's connection callback, where nothing may be awaited and
a task per write would cost more than the write. It relies on three behaviours of CPython's coroutines
and asyncio, pinned by tests/gateway/test_coro_step.py:

1. `coro.send(None)` runs the coroutine until its first real suspension; one that never suspends runs to
   its end inside that call, which raises StopIteration (PEP 492). An exception it raises comes out of
   `send()` as is.
2. A coroutine suspends on an unfinished asyncio Future by yielding that Future up the whole `await`
   chain, with `_asyncio_future_blocking` set to True (`Future.__await__`). The driver clears the flag,
   waits for the Future to be done and sends None again; `Future.__await__` then returns its result or
   raises its exception inside the coroutine (this is what `Task.__step` does). Clearing the flag is not
   a formality: while it is set, any other `await` of that Future (aiohttp's `write_eof()` awaits the
   same drain waiter) raises "await wasn't used with future" in the C implementation of asyncio.
3. A bare `yield` (as in `asyncio.sleep(0)`) yields None: resume on the next turn of the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

C = TypeVar("C", bound=Coroutine[Any, Any, Any])


def step_coroutine(coro: C, resume: Callable[[C], None]) -> bool:
    """Run `coro` to its end or its next suspension; True when it ended.

    When it suspended, `resume(coro)` is called once it may go on (its Future is done, or the loop
    turned): the caller steps it again then. What the coroutine raises propagates.
    """
    try:
        yielded = coro.send(None)
    except StopIteration:
        return True
    if yielded is None:
        asyncio.get_running_loop().call_soon(resume, coro)
    elif getattr(yielded, "_asyncio_future_blocking", False):
        yielded._asyncio_future_blocking = False
        yielded.add_done_callback(lambda _: resume(coro))
    else:
        coro.close()
        raise RuntimeError(f"a coroutine stepped by hand yielded {yielded!r}, not an asyncio Future")
    return False
