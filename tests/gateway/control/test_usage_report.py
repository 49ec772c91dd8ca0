"""GET /usage: sums by day, model, instance and key over a window, for the key's organization only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from gateway.control.usage_report import usage_window
from gateway.errors import ApiError

if TYPE_CHECKING:
    from conftest import Api

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)
DAY1 = datetime(2026, 3, 1, 9, tzinfo=UTC)
DAY2 = datetime(2026, 3, 2, 23, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "window"),
    [(None, None, (NOW - timedelta(days=30), NOW)), (DAY1, None, (DAY1, NOW)),
     (None, DAY2, (DAY2 - timedelta(days=30), DAY2)), (DAY1, DAY2, (DAY1, DAY2))],
)
def test_window_defaults(start: datetime | None, end: datetime | None, window: tuple[datetime, datetime]) -> None:
    assert usage_window(start, end, NOW) == window


@pytest.mark.parametrize(("start", "end"), [(DAY2, DAY1), (DAY1, DAY1), (DAY1 - timedelta(days=400), DAY1)])
def test_bad_windows(start: datetime, end: datetime) -> None:
    with pytest.raises(ApiError) as caught:
        usage_window(start, end, NOW)
    assert (caught.value.param, caught.value.code) == ("from", "invalid_window")


async def _seed(api: Api) -> str:
    instance_id = await api.insert_instance()
    await api.insert_usage(created_at=DAY1, instance_id=instance_id, prompt=10, completion=5)
    await api.insert_usage(created_at=DAY1, model="qwen-7b", prompt=100, completion=50, status="client_cancelled")
    await api.insert_usage(created_at=DAY2, instance_id=instance_id, prompt=1, completion=1)
    await api.insert_usage(created_at=DAY2, org="other", prompt=1000, completion=1000)
    await api.insert_usage(created_at=DAY2 + timedelta(days=30), prompt=7, completion=7)
    return instance_id


WINDOW = "from=2026-03-01&to=2026-03-05"


async def test_by_day(api: Api) -> None:
    await _seed(api)
    body = await api.get(f"/usage?{WINDOW}")
    assert body["group_by"] == "day" and body["organization_id"] == api.org_id
    assert [(r["day"], r["requests"], r["successful_requests"], r["total_tokens"]) for r in body["data"]] == [
        ("2026-03-01", 2, 1, 165), ("2026-03-02", 1, 1, 2),
    ]
    assert body["totals"] == {"requests": 3, "successful_requests": 2, "prompt_tokens": 111,
                              "completion_tokens": 56, "total_tokens": 167}
    assert body["from"].startswith("2026-03-01T00:00:00") and body["to"].startswith("2026-03-05")


async def test_by_model_and_instance(api: Api) -> None:
    instance_id = await _seed(api)
    by_model = await api.get(f"/usage?{WINDOW}&group_by=model")
    assert [(r["model"], r["total_tokens"]) for r in by_model["data"]] == [("qwen-7b", 150), ("qwen-small", 17)]
    by_instance = await api.get(f"/usage?{WINDOW}&group_by=instance")
    assert [(r["instance_id"], r["requests"]) for r in by_instance["data"]] == [(None, 1), (instance_id, 2)]
    only = await api.get(f"/usage?{WINDOW}&model=qwen-7b")
    assert only["totals"]["requests"] == 1


async def test_by_key_with_its_name(api: Api) -> None:
    await _seed(api)
    await api.sql("UPDATE finops.inference_usage SET api_key_id = %(k)s WHERE model = 'qwen-7b'",
                  {"k": api.admin_key_id})
    by_key = await api.get(f"/usage?{WINDOW}&group_by=key")
    assert [(r["api_key_id"], r["api_key_name"], r["total_tokens"]) for r in by_key["data"]] == [
        (api.admin_key_id, "test admin", 150), (None, None, 17)]


_SUMS = ["requests", "successful_requests", "prompt_tokens", "completion_tokens", "total_tokens"]


@pytest.mark.parametrize(
    ("group_by", "keys"),
    [("day", ["day"]), ("model", ["model_id", "model"]), ("instance", ["instance_id"]),
     ("key", ["api_key_id", "api_key_name"])],
)
async def test_rows_carry_only_their_grouping_key_and_the_sums(api: Api, group_by: str, keys: list[str]) -> None:
    await _seed(api)
    body = await api.get(f"/usage?{WINDOW}&group_by={group_by}")
    assert body["data"], "the seed has usage in the window"
    assert {tuple(row) for row in body["data"]} == {tuple(keys + _SUMS)}


async def test_organizations_see_only_their_usage(api: Api) -> None:
    await _seed(api)
    other = await api.get(f"/usage?{WINDOW}", key=api.other_admin_key)
    assert other["totals"]["total_tokens"] == 2000
    _, body = await api.call("GET", f"/usage?organization_id={api.other_org_id}", expect=403)
    assert body["error"]["param"] == "organization_id"


@pytest.mark.parametrize(
    ("query", "param"),
    [("group_by=week", "group_by"), ("from=yesterday", "from"), ("from=2026-03-05&to=2026-03-01", "from"),
     ("organization_id=demo", "organization_id"), ("tenant=x", "tenant")],
)
async def test_bad_queries_are_400(api: Api, query: str, param: str) -> None:
    _, body = await api.call("GET", f"/usage?{query}", expect=400)
    assert body["error"]["param"] == param


async def test_needs_an_admin_key(api: Api) -> None:
    await api.call("GET", "/usage", key=api.inference_key, expect=403)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        # `%2B` is `+`: a bare `+` in a query string is a space.
        ("to=0323-09-25T16:42:42%2B23:34", "to"),
        ("from=2026-03-01T00:00:00-15:30", "from"),
        ("from=0001-01-01T00:00:00%2B01:00&to=0001-01-05", "from"),
    ],
)
async def test_out_of_range_datetimes_are_400_naming_the_parameter(api: Api, query: str, param: str) -> None:
    status, body = await api.call("GET", f"/usage?{query}")
    assert status == 400, body
    assert body["error"]["param"] == param


async def test_a_window_given_with_offsets_is_answered_in_utc(api: Api) -> None:
    await _seed(api)
    body = await api.get("/usage?from=2026-03-01T09:00:00%2B09:00&to=2026-03-05T00:00:00-05:00")
    assert body["from"].startswith("2026-03-01T00:00:00") and body["to"].startswith("2026-03-05T05:00:00")
    assert body["totals"]["requests"] == 3
