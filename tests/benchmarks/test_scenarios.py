from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from benchmarks.loadgen import Endpoint, LoadResult
from benchmarks.scenarios import FULL, QUICK, Entry, rotated
from benchmarks.stack import Target

_WORKER = Endpoint("127.0.0.1", 1)


def _never(target: Target) -> Callable[[], Awaitable[LoadResult]]:
    raise AssertionError("rotating entries runs nothing")


def _entries(*names: str) -> list[Entry]:
    return [("a", Target(name, _WORKER, None, _WORKER), _never) for name in names]


@pytest.mark.parametrize(
    ("rep", "order"),
    [(0, ["direct", "gateway", "peer"]), (1, ["gateway", "peer", "direct"]), (2, ["peer", "direct", "gateway"]),
     (3, ["direct", "gateway", "peer"])],
)  # fmt: skip
def test_each_repetition_starts_one_target_further(rep: int, order: list[str]) -> None:
    assert [target.name for _, target, _ in rotated(_entries("direct", "gateway", "peer"), rep)] == order


def test_quick_plan_is_shorter_in_every_load_duration() -> None:
    assert QUICK.reps < FULL.reps
    for name in ("a_duration_s", "a_static_duration_s", "b_duration_s", "c_duration_s", "d_duration_s", "e_tokens"):
        assert getattr(QUICK, name) < getattr(FULL, name)
