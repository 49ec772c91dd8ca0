"""Deployment quotas of an organization: live instances, their GPUs, and a monthly budget.

Checked in the deployment's own transaction, before its instance row is written, so a refused
deployment never reaches the scheduler or a cloud. The organization's row is locked (`FOR UPDATE`)
first: two concurrent deployments of one organization queue there, and the second counts the first's
instance, so both cannot pass a quota at its last unit.

- max_instances: live instances (every status but terminated and failed), the new one included.
- max_gpus: the sum of their instance types' gpu_count, the new one included.
- monthly_budget: in the currency of instance_types.cost_per_hour. The spend so far this calendar month
  (UTC), each instance's cost_per_hour times the hours it lived within the month, must be below it.
  It stops new deployments; it never terminates running instances.

A refusal is a 429 `quota_exceeded` whose `param` names the quota and whose message gives its limit
and the current use. No Retry-After: waiting does not free a quota, terminating an instance (or the
next month, for the budget) does.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiopg

from gateway.error_codes import ErrorCode
from gateway.errors import ApiError
from sql.queries import queries


@dataclass(frozen=True, slots=True)
class Quotas:
    """None: unlimited."""

    max_instances: int | None = None
    max_gpus: int | None = None
    monthly_budget: Decimal | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max_instances, self.max_gpus, self.monthly_budget))


@dataclass(frozen=True, slots=True)
class Spending:
    live_instances: int = 0
    live_gpus: int = 0
    month_spend: Decimal = Decimal(0)


def quota_refusal(quotas: Quotas, spending: Spending, requested_gpus: int) -> ApiError | None:
    """The 429 for one more instance of `requested_gpus` GPUs, or None when every quota allows it."""
    if quotas.max_instances is not None and spending.live_instances + 1 > quotas.max_instances:
        return _refused("max_instances", f"The organization's quota of {quotas.max_instances} live instances "
                        f"is reached: {spending.live_instances} are live.")
    if quotas.max_gpus is not None and spending.live_gpus + requested_gpus > quotas.max_gpus:
        return _refused("max_gpus", f"The organization's quota of {quotas.max_gpus} GPUs would be exceeded: "
                        f"{spending.live_gpus} are in use and this instance type has {requested_gpus}.")
    if quotas.monthly_budget is not None and spending.month_spend >= quotas.monthly_budget:
        return _refused("monthly_budget", f"The organization's monthly budget of {quotas.monthly_budget:.2f} is "
                        f"spent: {spending.month_spend:.2f} so far this month (UTC).")
    return None


def _refused(quota: str, message: str) -> ApiError:
    return ApiError(429, message, ErrorCode.QUOTA_EXCEEDED, quota)


async def check_quotas(conn: aiopg.Connection, organization_id: str, instance_type_id: str) -> None:
    """Lock the organization and refuse (429) a deployment its quotas do not allow; inside a transaction."""
    row = await queries.organizations.lock_organization_quotas(conn, organization_id=organization_id)
    quotas = Quotas(**row) if row is not None else Quotas()
    if not quotas.any:
        return
    spent = await queries.organizations.get_organization_spending(
        conn, organization_id=organization_id, instance_type_id=instance_type_id
    )
    refused = quota_refusal(quotas, spending_of(spent), int(spent["requested_gpus"] or 0))
    if refused is not None:
        raise refused


def spending_of(row: dict[str, Any]) -> Spending:
    return Spending(int(row["live_instances"]), int(row["live_gpus"]), Decimal(row["month_spend"]))
