from __future__ import annotations

import pytest

from scheduler.pacing import wait_delay_s


@pytest.mark.parametrize(
    ("waited_s", "expected"),
    [
        (None, 2.0),  # a wait that begins now: one tick
        (0.0, 2.0),
        (-5.0, 2.0),  # clocks disagree: never below a tick
        (10.0, 2.0),  # a tenth of 10 s is below the tick
        (50.0, 5.0),
        (150.0, 15.0),
        (1500.0, 15.0),  # capped however long it lasts
    ],
)
def test_a_wait_is_polled_at_a_tenth_of_its_length_between_a_tick_and_the_cap(
    waited_s: float | None, expected: float
) -> None:
    assert wait_delay_s(waited_s, tick_s=2.0, cap_s=15.0) == pytest.approx(expected)


def test_a_worker_that_never_answers_costs_far_fewer_polls_than_one_per_tick() -> None:
    tick, cap, deadline = 2.0, 15.0, 1800.0
    t, polls = 0.0, 0
    while t < deadline:
        t += wait_delay_s(t, tick, cap)
        polls += 1
    assert polls < 150, polls  # one per tick would be 900
