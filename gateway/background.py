"""Helpers for the gateway's long-running background tasks (refresh, notifications, usage)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

# How long shutdown waits for cancelled background tasks before it goes on without them.
_STOP_TIMEOUT_S = 5.0


async def stop_tasks(tasks: Iterable[asyncio.Task[None]]) -> None:
    pending = list(tasks)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=_STOP_TIMEOUT_S)
