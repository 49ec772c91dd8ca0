"""The metrics every inference request moves, counted in plain Python and folded into prometheus_client.

A prometheus_client observation costs one to three microseconds (a lock, a walk over the buckets, and
in multiprocess mode a write to an mmap'd file); a non-streaming request made about fifteen of them,
near a tenth of the gateway's CPU per request. Here a request adds to a dict or to one bucket count
(found with `bisect`), and `HotMetrics.fold()` applies the sums to the metrics of gateway/metrics.py:
every `FOLD_S`, and before this process answers a scrape, so a scrape of a one-process gateway sees
every request that has ended. With several processes, another process's last `FOLD_S` may be missing
from a scrape; it is in the next one. The in-flight gauge is set at each fold from the worker view's
own count, the one least-load routing uses.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import Histogram

from gateway import metrics

FOLD_S = 1.0


def add_observations(child: Any, counts: list[int], total: float) -> None:
    """Apply observations counted by bucket to a histogram child, as `observe()` once per value would.

    `counts[i]` is the number of values v with `bounds[i-1] < v <= bounds[i]`, over the child's upper
    bounds (+Inf last), `total` their sum. prometheus_client has no public bulk observe; this relies on
    what `Histogram.observe` itself does in prometheus_client 0.26 (metrics.py): add the value to
    `child._sum` and 1 to `child._buckets[i]` for the first bound the value does not exceed (each bucket
    holds its own count; exposition accumulates them). tests/gateway/test_hot_metrics.py checks it
    against `observe()` and fails when that changes.
    """
    child._raise_if_not_observable()
    buckets = child._buckets
    if len(buckets) != len(counts):
        raise ValueError(f"{len(counts)} bucket counts for a histogram of {len(buckets)} buckets")
    child._sum.inc(total)
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)


def upper_bounds(histogram: Histogram) -> tuple[float, ...]:
    """A histogram's upper bounds as its children use them (+Inf last)."""
    return tuple(histogram._upper_bounds)


class BucketCounts:
    """Observations of one histogram child not yet folded: a count per bucket and their sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, the bucket `observe()` would count it in.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def take(self) -> tuple[list[int], float] | None:
        """The counts and sum so far, reset; None when nothing was observed."""
        if not any(self.counts):
            return None
        taken = self.counts, self.total
        self.counts, self.total = [0] * len(self.bounds), 0.0
        return taken


class _HistogramFamily:
    """Bucket counts per label values of one labelled histogram."""

    __slots__ = ("_bounds", "_by_labels", "_histogram")

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._bounds = upper_bounds(histogram)
        self._by_labels: dict[str, BucketCounts] = {}

    def __call__(self, label: str) -> BucketCounts:
        counts = self._by_labels.get(label)
        if counts is None:
            counts = self._by_labels[label] = BucketCounts(self._bounds)
        return counts

    def fold(self) -> None:
        for label, counts in self._by_labels.items():
            taken = counts.take()
            if taken is not None:
                add_observations(self._histogram.labels(label), *taken)


class HotMetrics:
    """One gateway process's unfolded counts of the per-request metrics."""

    def __init__(self) -> None:
        self.requests: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.tokens: collections.Counter[tuple[str, str]] = collections.Counter()
        self.affinity: collections.Counter[str] = collections.Counter()
        self.latency = _HistogramFamily(metrics.LATENCY)
        self.ttft = _HistogramFamily(metrics.TTFT)
        self.phase = _HistogramFamily(metrics.PHASE)
        # Instances whose in-flight gauge was set: set again (to 0) once their requests are over.
        self._gauged: set[str] = set()

    def fold(self, in_flight: Mapping[str, int] | None = None) -> None:
        """Apply everything counted since the last fold; set the in-flight gauges from `in_flight`."""
        requests, self.requests = self.requests, collections.Counter()
        for labels, count in requests.items():
            metrics.requests(*labels).inc(count)
        tokens, self.tokens = self.tokens, collections.Counter()
        for (model, kind), count in tokens.items():
            metrics.tokens(model, kind).inc(count)
        affinity, self.affinity = self.affinity, collections.Counter()
        for result, count in affinity.items():
            metrics.affinity(result).inc(count)
        for family in (self.latency, self.ttft, self.phase):
            family.fold()
        if in_flight is not None:
            self._set_in_flight(in_flight)

    def _set_in_flight(self, in_flight: Mapping[str, int]) -> None:
        for instance_id in self._gauged - in_flight.keys():
            metrics.in_flight(instance_id).set(0)
        for instance_id, count in in_flight.items():
            metrics.in_flight(instance_id).set(count)
        self._gauged = set(in_flight)

    def forget(self, instance_ids: Iterable[str]) -> None:
        """Instances that left the fleet: their gauges are not set again (gateway/metrics.py drops them)."""
        self._gauged.difference_update(instance_ids)

    async def fold_forever(self, in_flight: Callable[[], Mapping[str, int]]) -> None:
        while True:
            await asyncio.sleep(FOLD_S)
            self.fold(in_flight())
