from __future__ import annotations

import pytest

from benchmarks.stats import median, percentile


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([], 50, None),
        ([3.0], 0, 3.0),
        ([3.0], 99, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.5),  # order of the input does not matter
        ([1.0, 2.0, 3.0, 4.0, 5.0], 50, 3.0),
        ([float(v) for v in range(1, 101)], 99, 99.01),
        ([0.0, 10.0], 25, 2.5),
    ],
)
def test_percentile_interpolates_between_closest_ranks(values: list[float], p: float, expected: float | None) -> None:
    got = percentile(values, p)
    assert got == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize("p", [-1, 100.5])
def test_percentile_outside_0_100_is_refused(p: float) -> None:
    with pytest.raises(ValueError, match="within 0-100"):
        percentile([1.0], p)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), ([None, None], None), ([3.0, None, 1.0], 2.0), ([5.0, 1.0, 3.0], 3.0)],
)
def test_median_skips_what_was_not_measured(values: list[float | None], expected: float | None) -> None:
    assert median(values) == expected
