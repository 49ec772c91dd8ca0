"""Cost so far: the type's hourly price over the instance's life."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gateway.console.cost import cost_so_far, format_cost, instance_cost

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("price", "ended", "now", "expected"), [
    (Decimal("2.5"), None, T0 + timedelta(hours=2), 5.0),
    (Decimal("2.5"), T0 + timedelta(minutes=30), T0 + timedelta(days=3), 1.25),  # stops at termination
    (1.0, None, T0 - timedelta(seconds=5), 0.0),  # a clock a little behind is not a refund
    (None, None, T0 + timedelta(hours=1), None),
])
def test_cost_so_far(price: Decimal | float | None, ended: datetime | None, now: datetime,
                     expected: float | None) -> None:
    assert cost_so_far(price, T0, ended, now) == (None if expected is None else pytest.approx(expected))


def test_format_and_lookup_by_type() -> None:
    assert (format_cost(None), format_cost(1234.567)) == ("-", "1,234.57")
    row = {"instance_type_id": "t", "created_at": T0, "terminated_at": None}
    assert instance_cost(row, {"t": Decimal("1")}, T0 + timedelta(hours=3)) == "3.00"
    assert instance_cost(row, {}, T0) == "-"
