"""GET /action_logs: filters, newest first, pages, and each organization's view."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Api


async def _log(api: Api, instance_id: str | None, action: str, status: str = "success",
               component: str = "scheduler", seconds_ago: int = 0) -> None:
    await api.sql(
        "INSERT INTO action_logs (instance_id, action_type, component, status, created_at)"
        " VALUES (%(i)s, %(a)s, %(c)s, %(s)s, now() - make_interval(secs => %(ago)s))",
        {"i": instance_id, "a": action, "c": component, "s": status, "ago": seconds_ago},
    )


async def test_filters_and_order(api: Api) -> None:
    first = await api.insert_instance()
    second = await api.insert_instance()
    await _log(api, first, "PROVIDER_CREATE", seconds_ago=30)
    await _log(api, first, "HEALTH_CHECK", status="failed", seconds_ago=20)
    await _log(api, second, "PROVIDER_CREATE", seconds_ago=10)
    await _log(api, None, "ORPHAN_SWEEP", seconds_ago=5)

    async def actions(query: str = "") -> list[str]:
        return [row["action_type"] for row in (await api.get(f"/action_logs?{query}"))["data"]]

    assert await actions() == ["ORPHAN_SWEEP", "PROVIDER_CREATE", "HEALTH_CHECK", "PROVIDER_CREATE"]
    assert await actions(f"instance_id={first}") == ["HEALTH_CHECK", "PROVIDER_CREATE"]
    assert await actions("action_type=PROVIDER_CREATE") == ["PROVIDER_CREATE", "PROVIDER_CREATE"]
    assert await actions("status=failed") == ["HEALTH_CHECK"]
    assert await actions("component=api") == []
    page = await api.get("/action_logs?limit=3")
    assert page["has_more"] is True
    rest = await api.get(f"/action_logs?limit=3&cursor={page['next_cursor']}")
    assert [r["action_type"] for r in rest["data"]] == ["PROVIDER_CREATE"] and rest["has_more"] is False
    row = page["data"][1]
    assert set(row) >= {"id", "instance_id", "component", "status", "metadata", "duration_ms", "created_at",
                        "completed_at", "error_code", "error_message"}


async def test_other_organizations_logs_are_hidden(api: Api) -> None:
    theirs = await api.insert_instance(org="other")
    unowned = await api.insert_instance(org=None)
    await _log(api, theirs, "PROVIDER_CREATE")
    await _log(api, unowned, "PROVIDER_START")
    assert [r["action_type"] for r in (await api.get("/action_logs"))["data"]] == ["PROVIDER_START"]
    other = await api.get("/action_logs", key=api.other_admin_key)
    assert sorted(r["action_type"] for r in other["data"]) == ["PROVIDER_CREATE", "PROVIDER_START"]


@pytest.mark.parametrize(
    ("query", "param"),
    [("instance_id=abc", "instance_id"), ("status=done", "status"), ("action_type=drop table", "action_type"),
     ("component=cron", "component"), ("since=today", "since")],
)
async def test_bad_queries_are_400(api: Api, query: str, param: str) -> None:
    _, body = await api.call("GET", f"/action_logs?{query}", expect=400)
    assert body["error"]["param"] == param


async def test_needs_an_admin_key(api: Api) -> None:
    await api.call("GET", "/action_logs", key=api.inference_key, expect=403)
