"""gateway.workers: least-loaded choice with random ties, the ready-worker view and its in-flight counts."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.workers import Worker, WorkerView, choose, shows_instance, worker_from_row
from inventiv.worker_secrets import WorkerSecrets

NOW = 1_000_000.0
STALE_AFTER_S = 300.0
SMALL, LARGE = "model-small", "model-large"


def worker(instance_id: str, *, model: str = SMALL, depth: int = 0, age_s: float = 0.0) -> Worker:
    return Worker(
        instance_id=instance_id, model_id=model, host="10.0.0.1", port=8000, served_model=None,
        queue_depth=depth, heartbeat_at=NOW - age_s,
    )


def ident(picked: Worker | None) -> str | None:
    return None if picked is None else picked.instance_id


def view(*workers: Worker, seed: int = 7) -> WorkerView:
    table = WorkerView(STALE_AFTER_S, random.Random(seed))
    table.replace(workers)
    return table


@pytest.mark.parametrize(
    ("depths", "in_flight", "chosen"),
    [
        ({"a": 0}, {}, "a"),
        ({"a": 3, "b": 1, "c": 2}, {}, "b"),
        # Local in-flight requests count as load on top of the reported queue.
        ({"a": 0, "b": 1}, {"a": 2}, "b"),
        ({"a": 5, "b": 0}, {"b": 4}, "b"),
        ({"a": 5, "b": 0}, {"b": 6}, "a"),
        # In-flight counts of workers that are not candidates change nothing.
        ({"a": 1, "b": 2}, {"zz": 9}, "a"),
    ],
    ids=["single", "least-queue", "in-flight-adds", "sum-lower", "sum-higher", "unrelated-in-flight"],
)
def test_choose_least_load(depths: dict[str, int], in_flight: dict[str, int], chosen: str) -> None:
    candidates = [worker(i, depth=d) for i, d in depths.items()]
    assert ident(choose(candidates, in_flight, random.Random(1))) == chosen


def test_choose_nothing_from_no_candidates() -> None:
    assert choose([], {}, random.Random(1)) is None


def test_choose_breaks_ties_at_random_among_the_least_loaded_only() -> None:
    candidates = [worker("a", depth=1), worker("b", depth=0), worker("c", depth=2), worker("d", depth=0)]
    rng = random.Random(42)
    picks = Counter(ident(choose(candidates, {"c": 0}, rng)) for _ in range(200))
    assert set(picks) == {"b", "d"}
    # Both tied workers get a real share, not one of them once by luck.
    assert min(picks.values()) >= 50


def test_view_picks_least_loaded_of_the_model() -> None:
    table = view(worker("a", depth=2), worker("b", depth=1), worker("big", model=LARGE, depth=0))
    assert ident(table.pick(SMALL, NOW)) == "b"
    assert ident(table.pick(LARGE, NOW)) == "big"
    assert table.pick("model-unknown", NOW) is None


@pytest.mark.parametrize(
    ("ages", "exclude", "picked"),
    [
        ({"a": 0.0, "b": 10.0}, None, {"a", "b"}),
        # A heartbeat exactly stale_after_s old is still fresh; older is stale.
        ({"a": STALE_AFTER_S, "b": STALE_AFTER_S + 0.001}, None, {"a"}),
        ({"a": 301.0, "b": 3600.0}, None, {None}),
        ({"a": 0.0, "b": 0.0}, "a", {"b"}),
        ({"a": 0.0, "b": 400.0}, "a", {None}),
        ({"a": 0.0}, "not-there", {"a"}),
    ],
    ids=["all-fresh", "stale-boundary", "all-stale", "exclude", "exclude-and-stale", "exclude-unknown"],
)
def test_view_pick_skips_stale_and_excluded(
    ages: dict[str, float], exclude: str | None, picked: set[str | None]
) -> None:
    table = view(*(worker(i, age_s=age) for i, age in ages.items()))
    picks = {ident(table.pick(SMALL, NOW, exclude=exclude)) for _ in range(50)}
    assert picks == picked


def test_view_pick_prefers_a_stale_free_worker_over_a_less_loaded_stale_one() -> None:
    table = view(worker("stale", depth=0, age_s=STALE_AFTER_S + 1), worker("busy", depth=50))
    assert ident(table.pick(SMALL, NOW)) == "busy"


@pytest.mark.parametrize(
    ("instance_id", "model", "now", "expected"),
    [
        ("a", SMALL, NOW, "a"),
        ("a", LARGE, NOW, None),
        ("gone", SMALL, NOW, None),
        ("a", SMALL, NOW + STALE_AFTER_S, "a"),
        ("a", SMALL, NOW + STALE_AFTER_S + 1, None),
    ],
    ids=["fresh", "other-model", "unknown-instance", "at-the-limit", "stale"],
)
def test_eligible(instance_id: str, model: str, now: float, expected: str | None) -> None:
    table = view(worker("a"), worker("b", model=LARGE))
    assert ident(table.eligible(instance_id, model, now)) == expected


def test_acquire_and_release_count_in_flight_and_steer_the_next_pick() -> None:
    a, b = worker("a"), worker("b", depth=1)
    table = view(a, b)
    assert table.pick(SMALL, NOW) is a
    table.acquire(a)
    table.acquire(a)
    assert table.in_flight == {"a": 2}
    assert table.pick(SMALL, NOW) is b
    table.release(a)
    assert table.in_flight == {"a": 1}
    table.release(a)
    # Nothing in flight leaves no entry behind (the table does not grow with every worker ever seen).
    assert table.in_flight == {}
    assert table.pick(SMALL, NOW) is a


def test_release_more_than_acquired_never_goes_negative() -> None:
    a = worker("a")
    table = view(a)
    table.release(a)
    assert table.in_flight == {}
    table.acquire(a)
    assert table.in_flight == {"a": 1}


def test_in_flight_survives_a_refresh() -> None:
    a, b = worker("a"), worker("b")
    table = view(a, b)
    table.acquire(a)
    gone = table.replace([worker("a"), worker("b")])
    assert gone == set()
    assert table.in_flight == {"a": 1}
    assert ident(table.pick(SMALL, NOW)) == "b"


def test_replace_returns_the_ids_that_left() -> None:
    table = view(worker("a"), worker("b"), worker("c", model=LARGE))
    gone = table.replace([worker("b"), worker("d")])
    assert gone == {"a", "c"}
    assert set(table.by_id) == {"b", "d"}
    assert table.pick(LARGE, NOW) is None
    assert table.eligible("a", SMALL, NOW) is None


def test_replace_moves_a_worker_to_its_new_model() -> None:
    table = view(worker("a"))
    assert table.replace([worker("a", model=LARGE)]) == set()
    assert table.pick(SMALL, NOW) is None
    assert table.eligible("a", SMALL, NOW) is None
    assert ident(table.pick(LARGE, NOW)) == "a"


def test_model_ids_lists_models_with_a_fresh_worker() -> None:
    table = view(worker("a"), worker("b", model=LARGE, age_s=STALE_AFTER_S + 1), worker("c", model="m3", age_s=5))
    assert table.model_ids(NOW) == {SMALL, "m3"}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            {"id": "i1", "model_id": "m1", "ip_address": "10.1.2.3", "worker_port": "8000",
             "worker_model_id": "served-name", "worker_queue_depth": 4, "heartbeat_at": 123.5,
             "organization_id": "o1"},
            Worker("i1", "m1", "10.1.2.3", 8000, "served-name", 4, 123.5, "o1"),
        ),
        (
            {"id": "i2", "model_id": "m1", "ip_address": "10.1.2.4", "worker_port": 8001,
             "worker_model_id": "", "worker_queue_depth": None, "heartbeat_at": None, "organization_id": None},
            Worker("i2", "m1", "10.1.2.4", 8001, None, 0, 0.0),
        ),
    ],
    ids=["full-row", "nulls"],
)
def test_worker_from_row(row: dict[str, object], expected: Worker) -> None:
    secrets = WorkerSecrets("k" * 40)
    built = worker_from_row(row, secrets)
    assert built == expected
    assert built.address == f"{expected.host}:{expected.port}".encode()
    assert built.authorization == f"Authorization: Bearer {secrets.for_instance(expected.instance_id)}\r\n".encode()
    assert secrets.for_instance(expected.instance_id) not in repr(built), "the secret stays out of logs"


@pytest.mark.parametrize(
    ("owner", "caller", "is_admin", "shown"),
    [
        ("o1", "o1", False, True),
        ("o1", "o1", True, True),
        ("o1", "o2", False, False),
        # Admin keys manage their own organization only: another tenant's instance stays hidden.
        ("o1", "o2", True, False),
        # The operator's instances (no organization) are shown to admin keys, as the control API does.
        (None, "o2", False, False),
        (None, "o2", True, True),
    ],
)
def test_shows_instance(owner: str | None, caller: str, is_admin: bool, shown: bool) -> None:
    owned = Worker("i1", SMALL, "10.0.0.1", 8000, None, 0, NOW, owner)
    assert shows_instance(owned, caller, is_admin) is shown
