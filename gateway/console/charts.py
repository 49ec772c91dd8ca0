"""Bar charts as inline SVG, drawn on the server: no chart library, nothing fetched by the browser."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

# The chart's own coordinate system; the SVG scales to its container's width.
WIDTH = 640
HEIGHT = 200
# Room on the left for the largest value and below for the labels.
_LEFT = 56
_BOTTOM = 36
_TOP = 10
# Most labels one axis shows before it shows only every n-th (long windows, many days).
_MAX_LABELS = 12
# A lone bar as wide as the chart reads as a block, not a bar.
_MAX_BAR_W = 48.0


def nice_max(value: float) -> float:
    """The axis maximum: `value` rounded up to 1, 2 or 5 times a power of ten (0 becomes 1)."""
    if value <= 0:
        return 1.0
    scale = 1.0
    while scale * 10 <= value:
        scale *= 10
    while scale > value:
        scale /= 10
    for step in (1, 2, 5, 10):
        if step * scale >= value:
            return step * scale
    return 10 * scale


def bar_geometry(values: Sequence[float]) -> list[tuple[float, float, float, float]]:
    """(x, y, width, height) of each bar in chart coordinates."""
    if not values:
        return []
    top = nice_max(max(values))
    slot = (WIDTH - _LEFT) / len(values)
    plot_h = HEIGHT - _BOTTOM - _TOP
    bars = []
    for i, value in enumerate(values):
        h = plot_h * value / top
        w = min(slot * 0.8, _MAX_BAR_W)
        bars.append((_LEFT + i * slot + (slot - w) / 2, _TOP + plot_h - h, w, h))
    return bars


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float]) -> Markup:
    """An accessible SVG bar chart (its title and one <title> per bar, read by screen readers)."""
    if not values:
        return Markup(f'<p class="empty">{escape(title)}: no data in this window.</p>')
    top = nice_max(max(values))
    every = max(1, -(-len(labels) // _MAX_LABELS))
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>",
             f'<text x="{_LEFT - 6}" y="{_TOP + 10}" text-anchor="end">{top:,.0f}</text>',
             f'<text x="{_LEFT - 6}" y="{HEIGHT - _BOTTOM}" text-anchor="end">0</text>',
             f'<line x1="{_LEFT}" y1="{HEIGHT - _BOTTOM}" x2="{WIDTH}" y2="{HEIGHT - _BOTTOM}" stroke="#cbd2dc"/>']
    for i, ((x, y, w, h), label, value) in enumerate(zip(bar_geometry(values), labels, values, strict=True)):
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}">'
                     f"<title>{escape(label)}: {value:,.0f}</title></rect>")
        if i % every == 0:
            parts.append(f'<text x="{x + w / 2:.1f}" y="{HEIGHT - _BOTTOM + 14}" text-anchor="middle">'
                         f"{escape(label[:14])}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))
