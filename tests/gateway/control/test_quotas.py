"""The quota decision, table-driven (the locked check through POST /deployments is in test_deployments.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.control.quotas import Quotas, Spending, quota_refusal


@pytest.mark.parametrize(("quotas", "spending", "gpus", "refused"), [
    (Quotas(), Spending(10**6, 10**6, Decimal(10**9)), 8, None),
    (Quotas(max_instances=3), Spending(live_instances=2), 1, None),
    (Quotas(max_instances=3), Spending(live_instances=3), 1, "max_instances"),
    (Quotas(max_instances=0), Spending(), 1, "max_instances"),
    (Quotas(max_gpus=8), Spending(live_gpus=4), 4, None),
    (Quotas(max_gpus=8), Spending(live_gpus=5), 4, "max_gpus"),
    # A CPU-only type fits a spent GPU quota.
    (Quotas(max_gpus=8), Spending(live_gpus=8), 0, None),
    (Quotas(monthly_budget=Decimal(100)), Spending(month_spend=Decimal("99.99")), 1, None),
    (Quotas(monthly_budget=Decimal(100)), Spending(month_spend=Decimal(100)), 1, "monthly_budget"),
    (Quotas(3, 8, Decimal(100)), Spending(3, 8, Decimal(100)), 1, "max_instances"),
])
def test_quota_refusal(quotas: Quotas, spending: Spending, gpus: int, refused: str | None) -> None:
    error = quota_refusal(quotas, spending, gpus)
    assert (error.param if error else None) == refused
    if error is not None:
        assert (error.status, error.code) == (429, "quota_exceeded")


def test_the_message_gives_the_limit_and_the_use() -> None:
    error = quota_refusal(Quotas(monthly_budget=Decimal(250)), Spending(month_spend=Decimal("251.337")), 1)
    assert error is not None
    assert error.message == "The organization's monthly budget of 250.00 is spent: 251.34 so far this month (UTC)."
