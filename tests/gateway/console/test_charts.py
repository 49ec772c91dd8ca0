"""Server-drawn SVG bar charts."""

from __future__ import annotations

import pytest

from gateway.console.charts import HEIGHT, WIDTH, bar_chart, bar_geometry, nice_max


@pytest.mark.parametrize(("value", "expected"), [
    (0, 1), (-5, 1), (0.3, 0.5), (1, 1), (7, 10), (12, 20), (18, 20), (20, 20), (21, 50), (101, 200), (999, 1000),
    (1_234_567, 2_000_000),
])
def test_axis_maximum_is_a_round_number_above_the_largest_value(value: float, expected: float) -> None:
    assert nice_max(value) == pytest.approx(expected)


def test_bars_are_proportional_side_by_side_and_inside_the_chart() -> None:
    bars = bar_geometry([10, 5, 0])
    assert bars[0][3] == pytest.approx(2 * bars[1][3]) and bars[2][3] == 0
    assert bars[0][0] < bars[1][0] < bars[2][0]
    for x, y, w, h in bars:
        assert x >= 0 and x + w <= WIDTH and y >= 0 and y + h <= HEIGHT
    assert bar_geometry([]) == []


def test_the_chart_is_escaped_svg_with_one_titled_bar_per_value() -> None:
    svg = bar_chart("Tokens <per> key", ["a&b", "c"], [3, 4])
    assert svg.startswith('<svg class="chart"') and svg.count("<rect") == 2
    assert "a&amp;b: 3" in svg and "Tokens &lt;per&gt; key" in svg and "<per>" not in svg
    assert "no data" in bar_chart("Empty", [], [])


def test_long_axes_label_only_some_bars() -> None:
    svg = bar_chart("Days", [f"d{i}" for i in range(90)], [1.0] * 90)
    assert svg.count("<rect") == 90 and svg.count('text-anchor="middle"') <= 12
