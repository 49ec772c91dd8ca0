"""Running one coroutine per row with a cap on how many run at once (health probes, reconciliation)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def fan_out(items: Iterable[T], work: Callable[[T], Awaitable[R]], *, limit: int) -> list[R]:
    """`work(item)` for every item, at most `limit` at a time; the results in the items' order."""
    if limit < 1:
        raise ValueError(f"fan_out needs a limit of at least 1, got {limit}")
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with gate:
            return await work(item)

    return list(await asyncio.gather(*(one(item) for item in items)))
