"""Percentiles and medians of measured figures."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100) with linear interpolation between closest ranks, as numpy's default.

    None for no values: a scenario that served nothing has no latency, and must not show a zero.
    """
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0-100, not {p}")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that were measured (None ones are skipped); None if there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
