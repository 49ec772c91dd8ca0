"""gateway.loop_lag: a stall of the event loop shows up as the probe's lag."""

from __future__ import annotations

import asyncio
import contextlib
import time

from gateway.loop_lag import probe_forever


async def test_a_blocked_loop_is_measured_as_the_probes_lag() -> None:
    lags: list[float] = []
    probe = asyncio.create_task(probe_forever(lags.append, every_s=0.01))
    await asyncio.sleep(0.05)
    quiet = list(lags)
    time.sleep(0.1)  # holds the loop, as a slow callback would
    await asyncio.sleep(0.03)
    probe.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await probe
    assert quiet and max(quiet) < 0.05
    assert max(lags) >= 0.08, lags
