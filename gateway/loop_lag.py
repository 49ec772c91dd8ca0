"""How late the event loop runs what is due: the measure of every stall a request can wait behind.

A task sleeps `PROBE_S` over and over and records by how much each wake-up came late
(`inventiv_gateway_event_loop_lag_seconds`). Whatever holds the loop (a routing-table reload, a usage
batch, a garbage collection, a slow callback) shows up there as the lag of the probe waiting behind
it, with no instrumenting of each task. Twenty wake-ups a second, a few microseconds each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway import metrics

PROBE_S = 0.05


async def probe_forever(record: Callable[[float], None] = metrics.LOOP_LAG.observe, every_s: float = PROBE_S) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every_s
        await asyncio.sleep(every_s)
        record(max(0.0, loop.time() - due))
