"""Organizations through the control API: platform admins manage them all, a tenant's admin sees only its
own and changes none; limits set here reach the gateway's key table at once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway import state

if TYPE_CHECKING:
    from conftest import Api


async def test_platform_admin_creates_lists_reads_and_updates(api: Api) -> None:
    _, created = await api.call("POST", "/organizations", json={
        "slug": "acme", "name": "Acme", "requests_per_minute": 600, "max_instances": 3, "monthly_budget": 500,
    }, expect=201)
    assert created["object"] == "organization"
    assert (created["slug"], created["name"], created["is_platform"]) == ("acme", "Acme", False)
    assert (created["requests_per_minute"], created["tokens_per_minute"], created["max_instances"]) == (600, None, 3)
    assert created["monthly_budget"] == 500
    assert created["usage"] == {"live_instances": 0, "live_gpus": 0, "month_spend": 0}
    listed = await api.get("/organizations")
    assert [o["slug"] for o in listed["data"]] == ["acme", "demo", "other"]
    demo = next(o for o in listed["data"] if o["slug"] == "demo")
    # The oldest organization (the seed's) is a platform one without being flagged.
    assert demo["is_platform"] is True
    _, changed = await api.call("PATCH", f"/organizations/{created['id']}",
                                json={"requests_per_minute": None, "max_gpus": 8, "name": "Acme Inc"}, expect=200)
    assert (changed["requests_per_minute"], changed["max_gpus"], changed["name"]) == (None, 8, "Acme Inc")
    assert changed["max_instances"] == 3
    assert (await api.get(f"/organizations/{created['id']}"))["max_gpus"] == 8


async def test_paging_by_slug(api: Api) -> None:
    first = await api.get("/organizations", params={"limit": 1})
    assert [o["slug"] for o in first["data"]] == ["demo"] and first["has_more"]
    second = await api.get("/organizations", params={"limit": 5, "cursor": first["next_cursor"]})
    assert [o["slug"] for o in second["data"]] == ["other"] and not second["has_more"]


async def test_a_taken_slug_is_a_409_and_a_bad_one_a_400(api: Api) -> None:
    _, body = await api.call("POST", "/organizations", json={"slug": "other", "name": "x"}, expect=409)
    assert (body["error"]["code"], body["error"]["param"]) == ("organization_exists", "slug")
    _, body = await api.call("POST", "/organizations", json={"slug": "Not A Slug", "name": "x"}, expect=400)
    assert body["error"]["param"] == "slug"
    _, body = await api.call("POST", "/organizations", json={"slug": "x", "name": "x", "max_gpus": -1}, expect=400)
    assert body["error"]["param"] == "max_gpus"


async def test_a_tenant_admin_sees_only_its_own_and_changes_nothing(api: Api) -> None:
    mine = await api.get("/organizations", key=api.other_admin_key)
    assert [o["id"] for o in mine["data"]] == [api.other_org_id]
    assert mine["data"][0]["is_platform"] is False
    await api.get(f"/organizations/{api.other_org_id}", key=api.other_admin_key)
    _, body = await api.call("GET", f"/organizations/{api.org_id}", key=api.other_admin_key, expect=404)
    assert body["error"]["code"] == "organization_not_found"
    await api.call("PATCH", f"/organizations/{api.org_id}", key=api.other_admin_key, json={"name": "mine now"},
                   expect=404)
    _, body = await api.call("PATCH", f"/organizations/{api.other_org_id}", key=api.other_admin_key,
                             json={"max_instances": 1000}, expect=403)
    assert body["error"]["code"] == "platform_admin_required"
    await api.call("POST", "/organizations", key=api.other_admin_key, json={"slug": "evil", "name": "x"}, expect=403)
    await api.call("GET", "/organizations", key=api.inference_key, expect=403)
    assert (await api.get(f"/organizations/{api.org_id}"))["name"] != "mine now"


async def test_a_platform_flag_makes_another_organizations_admins_platform_admins(api: Api) -> None:
    await api.call("PATCH", f"/organizations/{api.other_org_id}", json={"is_platform": True}, expect=200)
    listed = await api.get("/organizations", key=api.other_admin_key)
    assert {o["slug"] for o in listed["data"]} == {"demo", "other"}


async def test_empty_update_is_refused(api: Api) -> None:
    _, body = await api.call("PATCH", f"/organizations/{api.other_org_id}", json={}, expect=400)
    assert body["error"]["code"] == "empty_update"


async def test_organization_limits_reach_the_key_table_at_once(api: Api) -> None:
    await api.call("PATCH", f"/organizations/{api.org_id}", json={"concurrent_requests": 4}, expect=200)
    plane = api.client.server.app[state.PLANE]  # type: ignore[index]
    await plane.reload(api.pool)
    principal = plane.keys.lookup(api.inference_key)
    assert principal is not None and principal.limits is not None
    assert principal.limits.org.concurrent_requests == 4 and not principal.limits.key.any


async def test_usage_counts_live_instances_gpus_and_this_months_spend(api: Api) -> None:
    await api.insert_instance(status="ready")
    await api.insert_instance(status="terminated")
    await api.sql("UPDATE instances SET created_at = now() - interval '2 hours' WHERE status = 'ready'")
    await api.sql("UPDATE instance_types SET cost_per_hour = 1.5, gpu_count = 2 WHERE code = 'MOCK-GPU-S'")
    usage = (await api.get(f"/organizations/{api.org_id}"))["usage"]
    assert (usage["live_instances"], usage["live_gpus"]) == (1, 2)
    # Two hours at 1.5 an hour, unless the month began less than two hours ago.
    assert 0 < usage["month_spend"] <= 3.01
