"""gateway.hot_metrics: per-request metrics counted locally, folded into prometheus_client."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics import MetricWrapperBase

from gateway import metrics
from gateway.hot_metrics import BucketCounts, HotMetrics, add_observations, upper_bounds

BOUNDS = (0.001, 0.01, 0.1, 1.0)
# Values on every side of every bound, the bounds themselves included (a value equal to a bound counts in it).
VALUES = st.lists(
    st.one_of(st.sampled_from([0.0, *BOUNDS, math.inf]), st.floats(min_value=0, max_value=10, allow_nan=False)),
    max_size=40,
)


def _samples(histogram: MetricWrapperBase) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in histogram.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def _pair() -> tuple[Histogram, Histogram]:
    registry = CollectorRegistry()
    observed = Histogram("observed", "by observe()", ["route"], buckets=BOUNDS, registry=registry)
    folded = Histogram("folded", "by add_observations()", ["route"], buckets=BOUNDS, registry=registry)
    return observed, folded


@given(VALUES)
def test_bulk_observations_equal_one_observe_per_value(values: list[float]) -> None:
    """Pins what add_observations relies on in prometheus_client: if this fails, its internals changed."""
    observed, folded = _pair()
    counts = BucketCounts(upper_bounds(folded))
    for value in values:
        observed.labels("r").observe(value)
        counts.observe(value)
    taken = counts.take()
    if taken is not None:
        add_observations(folded.labels("r"), *taken)
    assert {(n.replace("observed", "folded"), labels): v for (n, labels), v in _samples(observed).items()} == (
        _samples(folded)
    )


def test_bulk_observations_refuse_counts_of_another_shape() -> None:
    _, folded = _pair()
    with pytest.raises(ValueError, match="bucket counts"):
        add_observations(folded.labels("r"), [1, 2], 3.0)


def test_taking_the_counts_resets_them() -> None:
    counts = BucketCounts((1.0, math.inf))
    assert counts.take() is None
    counts.observe(0.5)
    counts.observe(2.0)
    assert counts.take() == ([1, 1], 2.5)
    assert counts.take() is None


def _value(name: str, labels: dict[str, str]) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_fold_applies_the_counts_and_starts_again() -> None:
    hot = HotMetrics()
    labels = {"route": "/v1/test-fold", "model": "m-fold", "status": "200"}
    requests_before = _value("inventiv_gateway_requests_total", labels)
    phase_before = _value("inventiv_gateway_phase_seconds_count", {"phase": "auth"})
    hot.requests[("/v1/test-fold", "m-fold", "200")] += 3
    hot.tokens[("m-fold", "prompt")] += 7
    hot.phase("auth").observe(0.00002)
    hot.phase("auth").observe(0.00004)
    assert _value("inventiv_gateway_requests_total", labels) == requests_before, "nothing applied before the fold"
    hot.fold()
    assert _value("inventiv_gateway_requests_total", labels) == requests_before + 3
    assert _value("inventiv_gateway_tokens_total", {"model": "m-fold", "kind": "prompt"}) >= 7
    assert _value("inventiv_gateway_phase_seconds_count", {"phase": "auth"}) == phase_before + 2
    hot.fold()
    assert _value("inventiv_gateway_requests_total", labels) == requests_before + 3, "counted once"


def test_in_flight_gauges_follow_the_worker_views_count_and_drop_to_zero() -> None:
    hot = HotMetrics()
    hot.fold({"inst-a": 2, "inst-b": 1})
    assert _value("inventiv_gateway_in_flight", {"instance": "inst-a"}) == 2
    assert _value("inventiv_gateway_in_flight", {"instance": "inst-b"}) == 1
    hot.fold({"inst-a": 1})
    assert _value("inventiv_gateway_in_flight", {"instance": "inst-a"}) == 1
    assert _value("inventiv_gateway_in_flight", {"instance": "inst-b"}) == 0, "its requests are over"
    hot.forget(["inst-a"])
    metrics.forget_instance("inst-a")
    hot.fold({})
    assert _value("inventiv_gateway_in_flight", {"instance": "inst-a"}) == 0
