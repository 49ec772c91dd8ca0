"""Lifecycle: idle is set exactly when no request is in flight."""

from gateway.lifecycle import Lifecycle


async def test_idle_only_when_every_request_left() -> None:
    lifecycle = Lifecycle()
    lifecycle.enter()
    lifecycle.enter()
    lifecycle.leave()
    assert (lifecycle.in_flight, lifecycle.idle.is_set()) == (1, False)
    lifecycle.leave()
    assert (lifecycle.in_flight, lifecycle.idle.is_set()) == (0, True)
