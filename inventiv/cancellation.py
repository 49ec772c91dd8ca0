"""Telling a task's own cancellation from an error, for every long-running loop of both processes."""

from __future__ import annotations

import asyncio


def being_cancelled() -> bool:
    """True when the current task has been asked to stop.

    Some libraries turn the CancelledError they receive mid-call into an error of their own (a
    connection error, say). A retry loop that catches errors must check this before retrying, or
    it swallows its own cancellation and never stops.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
