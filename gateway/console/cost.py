"""What an instance has cost so far: its type's hourly price over the time it has existed.

Clouds bill a server from its creation to its deletion; the row's created_at and terminated_at stand
for those (the request reaches the cloud within seconds).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

_HOUR_S = 3600


def cost_so_far(cost_per_hour: Decimal | float | None, created_at: datetime, ended_at: datetime | None,
                now: datetime) -> float | None:
    """The cost in the catalog's currency; None when the type has no price."""
    if cost_per_hour is None:
        return None
    seconds = max(((ended_at or now) - created_at).total_seconds(), 0.0)
    return float(cost_per_hour) * seconds / _HOUR_S


def format_cost(cost: float | None) -> str:
    return "-" if cost is None else f"{cost:,.2f}"


def instance_cost(instance: dict[str, Any], prices: dict[str, Any], now: datetime) -> str:
    return format_cost(cost_so_far(
        prices.get(str(instance["instance_type_id"])), instance["created_at"], instance["terminated_at"], now
    ))
