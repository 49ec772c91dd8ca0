"""One call in flight per key: concurrent callers asking for the same thing share the first one's answer.

Many instances of one type start provisioning at once after a burst of deployments; without this, each
first pass would ask the cloud's catalog the same question at the same moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        """`call()`'s result, shared with every caller that asks for `key` while it runs (errors too)."""
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(call())
            self._flights[key] = flight
            flight.add_done_callback(lambda _: self._flights.pop(key, None))
        # Shielded: one caller giving up (its pass was stopped) must not cancel the answer the others wait for.
        return await asyncio.shield(flight)

    def __len__(self) -> int:
        return len(self._flights)
