"""How soon a pass looks at an instance again when it is waiting on the cloud or on its worker.

A wait is polled at a fraction of how long it has lasted so far, between one tick and a cap: a server
that boots in 20 s is seen within a tick or two, one that takes minutes (a GPU server pulling a model)
costs a poll every `cap` seconds rather than every tick until its deadline, and a ready worker is noticed
at most `WAIT_POLL_FRACTION` of its boot time (and at most the cap) late, whatever the fleet's size.
"""

from __future__ import annotations

# 10 %: a worker that took 5 minutes to come up is noticed within 15 s (the default cap) of it answering.
WAIT_POLL_FRACTION = 0.1


def wait_delay_s(waited_s: float | None, tick_s: float, cap_s: float) -> float:
    """Seconds before the next look at a wait that began `waited_s` ago (None: it begins now)."""
    waited = max(0.0, waited_s or 0.0)
    return max(tick_s, min(cap_s, waited * WAIT_POLL_FRACTION))
