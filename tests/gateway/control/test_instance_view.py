"""Storage counts, sizes in GB and worker URLs, computed from rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.control.instance_view import group_by_instance, size_gb, storage_summary, worker_url

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("size_bytes", "gb"),
    [(None, None), (0, 0), (499_999_999, 0), (500_000_000, 1), (20 * 10**9, 20), (200_400_000_000, 200),
     (214_748_364_800, 215)],
)
def test_size_gb_rounds_decimal_gigabytes(size_bytes: int | None, gb: int | None) -> None:
    assert size_gb(size_bytes) == gb


def _volume(size: int | None, deleted: bool = False, instance: str = "i") -> dict[str, Any]:
    return {"instance_id": instance, "size_bytes": size, "deleted_at": NOW if deleted else None}


@pytest.mark.parametrize(
    ("volumes", "count", "sizes"),
    [
        ([], 0, []),
        ([_volume(20 * 10**9), _volume(200 * 10**9)], 2, [20, 200]),
        ([_volume(20 * 10**9), _volume(200 * 10**9, deleted=True)], 1, [20]),
        ([_volume(None)], 1, [None]),
    ],
)
def test_storage_summary_counts_live_volumes(volumes: list[dict[str, Any]], count: int, sizes: list[Any]) -> None:
    assert storage_summary(volumes) == {"storage_count": count, "storage_sizes_gb": sizes}


@pytest.mark.parametrize(
    ("ip", "port", "url"),
    [(None, 8000, None), ("10.0.0.5", None, None), ("10.0.0.5", 8000, "http://10.0.0.5:8000"),
     ("2001:db8::1", 8000, "http://[2001:db8::1]:8000")],
)
def test_worker_url(ip: str | None, port: int | None, url: str | None) -> None:
    assert worker_url({"ip_address": ip, "worker_port": port}) == url


def test_group_by_instance_keeps_order() -> None:
    a1, b1, a2 = _volume(1, instance="a"), _volume(2, instance="b"), _volume(3, instance="a")
    assert group_by_instance([a1, b1, a2]) == {"a": [a1, a2], "b": [b1]}
