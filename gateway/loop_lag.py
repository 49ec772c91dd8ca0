"""How late the event loop runs what is due: the measure of every stall a request can wait behind.

A task sleeps about `PROBE_S` over and over and records by how much each wake-up came late
(`inventiv_gateway_event_loop_lag_seconds`). Whatever holds the loop (a routing-table reload, a usage
batch, a garbage collection, a slow callback) shows up there as the lag of the probe waiting behind
it, with no instrumenting of each task.

The probe samples: each wake-up is due at a moment chosen independently of what the loop does, so the
histogram estimates the lag of any task due at any moment, and its sampling rate only sets how many
samples a window of the histogram holds (four a second: 1,200 in five minutes). The sleeps vary
around `PROBE_S` so that the samples never fall in step with a periodic task (the usage writer's
half-second batches, the routing refresh each second). What the probe costs is a wake-up of an
otherwise idle process each time, not its few microseconds of Python: 0.26 ms of CPU each, measured on
an idle gateway (2026-12-03: 25 wake-ups a second with the probe at 20 a second, 9.5 at 4 a second).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from gateway import metrics

PROBE_S = 0.25
# A generator of the probe's own: the process-wide `random` is not this module's to advance (a test
# driving hypothesis, which seeds and watches it, would see its draws change under it).
_jitter = random.Random()


async def probe_forever(record: Callable[[float], None] = metrics.LOOP_LAG.observe, every_s: float = PROBE_S) -> None:
    loop = asyncio.get_running_loop()
    while True:
        # Uniform over [every_s / 2, every_s * 3 / 2]: the mean sampling period is every_s.
        sleep_s = every_s * (0.5 + _jitter.random())
        due = loop.time() + sleep_s
        await asyncio.sleep(sleep_s)
        record(max(0.0, loop.time() - due))
