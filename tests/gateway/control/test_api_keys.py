"""POST/GET/DELETE /api_keys: shown once, listed without secrets, revoked here at once and elsewhere in 2 s."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from waiting import wait_until

from gateway import state
from gateway.app import create_app
from inventiv import redis_keys

if TYPE_CHECKING:
    from conftest import Api


async def test_create_list_revoke(api: Api) -> None:
    _, created = await api.call("POST", "/api_keys", json={"name": "ci", "scopes": ["inference"]}, expect=201)
    key = created["key"]
    assert key.startswith("ik_") and created["key_prefix"] == key[:10]
    assert created["organization_id"] == api.org_id and created["scopes"] == ["inference"]
    # Usable at once on this process, before any table reload.
    await api.call("GET", "/instances", key=key, expect=403)
    listed = await api.get("/api_keys")
    names = {k["name"]: k for k in listed["data"]}
    assert set(names) == {"test admin", "test inference", "ci"}
    assert all("key" not in k and "key_hash" not in k for k in listed["data"])
    assert names["ci"]["revoked_at"] is None and "last_used_at" in names["ci"]
    _, revoked = await api.call("DELETE", f"/api_keys/{created['id']}", expect=200)
    assert revoked["revoked_at"] is not None
    _, body = await api.call("GET", "/instances", key=key, expect=401)
    assert body["error"]["code"] == "invalid_api_key"
    await api.call("DELETE", f"/api_keys/{created['id']}", expect=200)


async def test_new_admin_key_works_at_once(api: Api) -> None:
    _, created = await api.call("POST", "/api_keys", json={"name": "ops", "scopes": ["admin"],
                                                            "organization_id": api.org_id}, expect=201)
    await api.get("/instances", key=created["key"])


async def test_revocation_reaches_another_gateway_process_within_two_seconds(aiohttp_client: Any, api: Api) -> None:
    _, created = await api.call("POST", "/api_keys", json={"name": "x", "scopes": ["admin"]}, expect=201)
    other_process = await aiohttp_client(create_app(api.settings))
    headers = {"Authorization": f"Bearer {created['key']}"}
    async with other_process.get("/instances", headers=headers) as resp:
        assert resp.status == 200
    await api.call("DELETE", f"/api_keys/{created['id']}", expect=200)

    async def refused() -> bool:
        async with other_process.get("/instances", headers=headers) as resp:
            assert resp.status == 401, resp.status
        return True

    await wait_until(refused, timeout_s=2.0, what="the other process to refuse the key")


async def test_changes_are_published(api: Api) -> None:
    pubsub = api.redis.pubsub()
    await pubsub.subscribe(redis_keys.key(api.settings, redis_keys.KEYS_CHANGED))
    try:
        await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        _, created = await api.call("POST", "/api_keys", json={"name": "p", "scopes": ["inference"]}, expect=201)
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
        assert message is not None and message["data"].decode() == created["id"]
    finally:
        await pubsub.aclose()


async def test_keys_of_other_organizations_are_out_of_reach(api: Api) -> None:
    _, body = await api.call("POST", "/api_keys", json={"name": "x", "scopes": ["admin"],
                                                         "organization_id": api.other_org_id}, expect=403)
    assert body["error"]["param"] == "organization_id"
    others = await api.get("/api_keys", key=api.other_admin_key)
    assert [k["name"] for k in others["data"]] == ["other admin"]
    await api.call("DELETE", f"/api_keys/{api.admin_key_id}", key=api.other_admin_key, expect=404)
    await api.get("/instances")


@pytest.mark.parametrize(
    ("body", "param"),
    [({"scopes": ["admin"]}, "name"), ({"name": "x"}, "scopes"), ({"name": "x", "scopes": []}, "scopes"),
     ({"name": "x", "scopes": ["root"]}, "scopes"), ({"name": "x", "scopes": "admin"}, "scopes"),
     ({"name": "", "scopes": ["admin"]}, "name"), ({"name": "x", "scopes": ["admin"], "ttl": 5}, "ttl"),
     ({"name": "x", "scopes": ["admin"], "organization_id": "demo"}, "organization_id")],
)
async def test_bad_bodies_are_400(api: Api, body: dict[str, Any], param: str) -> None:
    _, answer = await api.call("POST", "/api_keys", json=body, expect=400)
    assert answer["error"]["param"] == param


async def test_bad_ids_and_unknown_keys(api: Api) -> None:
    await api.call("DELETE", "/api_keys/xyz", expect=400)
    await api.call("DELETE", "/api_keys/00000000-0000-4000-8000-000000000000", expect=404)
    await api.call("GET", "/api_keys?limit=-1", expect=400)
    await api.call("GET", "/api_keys", key=api.inference_key, expect=403)


async def test_limits_are_set_and_cleared_on_the_organizations_own_keys(api: Api) -> None:
    _, created = await api.call("POST", "/api_keys", json={"name": "bot", "scopes": ["inference"]}, expect=201)
    assert (created["requests_per_minute"], created["limits_fail_mode"]) == (None, "open")
    _, limited = await api.call("PATCH", f"/api_keys/{created['id']}", json={
        "requests_per_minute": 60, "tokens_per_minute": 1000, "limits_fail_mode": "closed",
    }, expect=200)
    assert (limited["requests_per_minute"], limited["tokens_per_minute"], limited["concurrent_requests"],
            limited["limits_fail_mode"]) == (60, 1000, None, "closed")
    # In this process's key table at once.
    principal = api.client.server.app[state.PLANE].keys.lookup(created["key"])  # type: ignore[index]
    assert principal is not None and principal.limits is not None
    assert (principal.limits.key.requests_per_minute, principal.limits.fail_closed) == (60, True)
    _, cleared = await api.call("PATCH", f"/api_keys/{created['id']}", json={"requests_per_minute": None},
                                expect=200)
    assert (cleared["requests_per_minute"], cleared["tokens_per_minute"]) == (None, 1000)
    listed = {k["id"]: k for k in (await api.get("/api_keys"))["data"]}
    assert listed[created["id"]]["tokens_per_minute"] == 1000


async def test_another_organizations_key_limits_are_a_404(api: Api) -> None:
    _, created = await api.call("POST", "/api_keys", json={"name": "bot", "scopes": ["inference"]}, expect=201)
    _, body = await api.call("PATCH", f"/api_keys/{created['id']}", key=api.other_admin_key,
                             json={"requests_per_minute": 1}, expect=404)
    assert body["error"]["code"] == "api_key_not_found"


@pytest.mark.parametrize(("change", "param"), [
    ({"requests_per_minute": 0}, "requests_per_minute"),
    ({"limits_fail_mode": "sometimes"}, "limits_fail_mode"),
    ({"scopes": ["admin"]}, "scopes"),
    ({}, None),
])
async def test_bad_limits_are_400(api: Api, change: dict[str, Any], param: str | None) -> None:
    _, created = await api.call("POST", "/api_keys", json={"name": "bot", "scopes": ["inference"]}, expect=201)
    _, body = await api.call("PATCH", f"/api_keys/{created['id']}", json=change, expect=400)
    assert body["error"].get("param") == param


async def test_a_key_created_here_is_held_to_its_organizations_limits_at_once(api: Api) -> None:
    await api.sql("UPDATE organizations SET requests_per_minute = 5 WHERE id = %(o)s", {"o": api.org_id})
    plane = api.client.server.app[state.PLANE]  # type: ignore[index]
    await plane.reload(api.pool)
    _, created = await api.call("POST", "/api_keys", json={"name": "bot", "scopes": ["inference"]}, expect=201)
    principal = plane.keys.lookup(created["key"])
    assert principal is not None and principal.limits is not None
    assert principal.limits.org.requests_per_minute == 5
