"""GET /instances, GET /instances/{id}, DELETE /instances/{id}: views, filters, pages, termination."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from gateway.control.instances import Termination, termination_for
from inventiv import redis_keys

if TYPE_CHECKING:
    from conftest import Api

GB = 10**9
MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    ("status", "action"),
    [("provisioning", Termination.REQUEST), ("booting", Termination.REQUEST), ("ready", Termination.REQUEST),
     ("failed", Termination.REQUEST), ("terminating", Termination.REPEAT), ("terminated", Termination.CONFLICT)],
)
def test_termination_for_each_status(status: str, action: Termination) -> None:
    assert termination_for(status) is action


async def test_list_shows_storage_summary_and_detail_shows_every_volume(api: Api) -> None:
    instance_id = await api.insert_instance(ip_address="10.1.2.3", worker_status="ready", worker_queue_depth=3,
                                            worker_model_id="Qwen/Qwen2.5-0.5B-Instruct")
    await api.insert_volume(instance_id, "vol-boot", 20 * GB, is_boot=True)
    await api.insert_volume(instance_id, "vol-data", 200 * GB)
    await api.insert_volume(instance_id, "vol-old", 50 * GB, deleted=True)
    listed = await api.get("/instances")
    assert [i["id"] for i in listed["data"]] == [instance_id]
    summary = listed["data"][0]
    assert (summary["storage_count"], summary["storage_sizes_gb"]) == (2, [20, 200])
    assert "storages" not in summary
    assert not any("secret" in name or "token" in name for name in summary)
    detail = await api.get(f"/instances/{instance_id}")
    assert detail["worker_url"] == "http://10.1.2.3:8000"
    assert (detail["worker_status"], detail["worker_queue_depth"]) == ("ready", 3)
    assert detail["worker_model_id"] == "Qwen/Qwen2.5-0.5B-Instruct"
    storages = {s["provider_volume_id"]: s for s in detail["storages"]}
    assert set(storages) == {"vol-boot", "vol-data", "vol-old"}
    assert storages["vol-boot"]["is_boot"] and storages["vol-boot"]["delete_on_terminate"]
    assert storages["vol-data"]["size_gb"] == 200 and storages["vol-data"]["deleted_at"] is None
    assert storages["vol-old"]["deleted_at"] is not None
    assert storages["vol-boot"]["attached_at"] and storages["vol-boot"]["volume_type"] == "sbs_volume"


async def test_organizations_see_their_own_and_unowned_instances(api: Api) -> None:
    mine = await api.insert_instance(org="mine")
    theirs = await api.insert_instance(org="other")
    unowned = await api.insert_instance(org=None)
    seen = {i["id"] for i in (await api.get("/instances"))["data"]}
    assert seen == {mine, unowned}
    seen_by_other = {i["id"] for i in (await api.get("/instances", key=api.other_admin_key))["data"]}
    assert seen_by_other == {theirs, unowned}
    await api.get(f"/instances/{theirs}", expect=404)
    await api.call("DELETE", f"/instances/{theirs}", expect=404)
    assert (await api.sql("SELECT status FROM instances WHERE id = %(i)s", {"i": theirs})) == [("ready",)]


async def test_filters(api: Api) -> None:
    ready = await api.insert_instance(status="ready")
    failed = await api.insert_instance(status="failed", model_id=api.ids["Qwen/Qwen2.5-7B-Instruct"])
    scaleway = await api.insert_instance(provider_id=api.ids["scaleway"], zone_id=api.ids["fr-par-2"],
                                         instance_type_id=api.ids["L4-1-24G"])

    async def ids(query: str) -> set[str]:
        return {i["id"] for i in (await api.get(f"/instances?{query}"))["data"]}

    assert await ids("status=failed") == {failed}
    assert await ids("model=Qwen/Qwen2.5-7B-Instruct") == {failed}
    assert await ids(f"model={api.ids['Qwen/Qwen2.5-7B-Instruct']}") == {failed}
    assert await ids("provider=scaleway") == {scaleway}
    assert await ids(f"provider={api.ids['mock']}") == {ready, failed}
    assert await ids("zone=fr-par-2") == {scaleway}
    assert await ids("zone=local-1&status=ready") == {ready}
    assert await ids("model=nope") == set()


async def test_pages_walk_every_instance_once(api: Api) -> None:
    created = {await api.insert_instance() for _ in range(5)}
    seen: list[str] = []
    query = "/instances?limit=2"
    for _ in range(5):
        page = await api.get(query)
        seen += [i["id"] for i in page["data"]]
        if not page["has_more"]:
            break
        query = f"/instances?limit=2&cursor={page['next_cursor']}"
    assert len(seen) == 5 and set(seen) == created


@pytest.mark.parametrize(
    ("query", "param"),
    [("status=sleeping", "status"), ("limit=0", "limit"), ("limit=501", "limit"), ("limit=x", "limit"),
     ("cursor=bogus", "cursor"), ("colour=red", "colour"), ("status=ready&status=failed", "status")],
)
async def test_bad_list_queries_are_400(api: Api, query: str, param: str) -> None:
    _, body = await api.call("GET", f"/instances?{query}", expect=400)
    assert body["error"]["param"] == param


async def test_bad_and_unknown_ids(api: Api) -> None:
    _, body = await api.call("GET", "/instances/not-a-uuid", expect=400)
    assert body["error"]["param"] == "id"
    await api.call("GET", f"/instances/{MISSING}", expect=404)
    await api.call("DELETE", "/instances/123", expect=400)
    await api.call("DELETE", f"/instances/{MISSING}", expect=404)


async def test_delete_marks_terminating_logs_and_commands_once(api: Api) -> None:
    instance_id = await api.insert_instance(status="ready")
    _, body = await api.call("DELETE", f"/instances/{instance_id}", expect=202)
    assert body["status"] == "terminating" and body["terminating_at"]
    _, again = await api.call("DELETE", f"/instances/{instance_id}", expect=202)
    assert again["terminating_at"] == body["terminating_at"]
    logs = await api.sql("SELECT action_type, component FROM action_logs WHERE instance_id = %(i)s",
                         {"i": instance_id})
    assert logs == [("REQUEST_TERMINATE", "api")]
    commands = await api.commands()
    assert {(c["type"], c["instance_id"]) for c in commands} == {("TERMINATE", instance_id)}


async def test_terminating_a_terminated_instance_is_a_conflict(api: Api) -> None:
    instance_id = await api.insert_instance(status="terminated")
    _, body = await api.call("DELETE", f"/instances/{instance_id}", expect=409)
    assert body["error"]["code"] == "instance_terminated"
    assert await api.commands() == []


async def test_inference_keys_cannot_use_the_control_api(api: Api) -> None:
    instance_id = await api.insert_instance()
    for method, path in (("GET", "/instances"), ("GET", f"/instances/{instance_id}"),
                         ("DELETE", f"/instances/{instance_id}")):
        await api.call(method, path, key=api.inference_key, expect=403)
        async with api.client.request(method, path) as resp:
            assert resp.status == 401


async def test_delete_tells_the_gateways_at_once_that_the_worker_leaves(api: Api) -> None:
    instance_id = await api.insert_instance(status="ready")
    pubsub = api.redis.pubsub()
    await pubsub.subscribe(redis_keys.key(api.settings, redis_keys.WORKERS_CHANGED))
    try:
        await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        await api.call("DELETE", f"/instances/{instance_id}", expect=202)
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
    finally:
        await pubsub.aclose()
    assert message is not None and message["data"].decode() == instance_id
