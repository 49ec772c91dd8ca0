"""The fake Scaleway API refuses what the real one refuses; other tests (the scheduler's) rely on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from fake_scaleway import FakeScaleway, run_fake_scaleway
from scaleway_bodies import GPU_IMAGE_ID, recorded

ZONE = "fr-par-2"
SERVERS = f"/instance/v1/zones/{ZONE}/servers"
VOLUMES = f"/block/v1/zones/{ZONE}/volumes"


@pytest.fixture
async def fake() -> AsyncIterator[FakeScaleway]:
    async with run_fake_scaleway(polls_to_running=0, polls_to_gone=0) as running:
        yield running


@pytest.fixture
async def http(fake: FakeScaleway) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(fake.url, headers={"X-Auth-Token": fake.secret_key}) as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, path, json=body) as resp:
        return resp.status, (await resp.json() if resp.content_length else None)


async def create(http: aiohttp.ClientSession, **extra: Any) -> dict[str, Any]:
    request = recorded("create_server_request_L40S")
    del request["volumes"]  # its scratch volume "1" is not in the fake
    status, body = await call(http, "POST", SERVERS, {**request, **extra})
    assert status == 201, body
    server: dict[str, Any] = body["server"]
    return server


async def test_the_recorded_create_request_gives_the_recorded_shape(http: aiohttp.ClientSession) -> None:
    server = await create(http)
    expected = recorded("create_server_response_L40S")["server"]
    assert set(server) == set(expected)
    assert (server["state"], server["allowed_actions"], server["image"]["id"]) == ("stopped", ["poweron", "backup"],
                                                                                  GPU_IMAGE_ID)
    status, boot = await call(http, "GET", f"{VOLUMES}/{server['volumes']['0']['id']}")
    assert status == 200 and set(boot) == set(recorded("block_volume_boot_attached"))
    assert (boot["name"], boot["type"], boot["tags"], boot["status"]) == (
        "Ubuntu Jammy GPU OS 12 passthrough_sbs_volume_0", "sbs_5k", [], "in_use")


async def test_terminate_only_while_running_and_delete_only_while_stopped(
    http: aiohttp.ClientSession, fake: FakeScaleway
) -> None:
    server = await create(http, dynamic_ip_required=True)  # the recorded request asked for no public IP
    action = f"{SERVERS}/{server['id']}/action"
    status, body = await call(http, "POST", action, {"action": "terminate"})
    assert (status, body["type"]) == (400, "invalid_request_error")
    assert (await call(http, "POST", action, {"action": "poweron"}))[0] == 202
    status, body = await call(http, "GET", f"{SERVERS}/{server['id']}")
    assert body["server"]["state"] == "running" and body["server"]["public_ip"]["address"] == "127.0.0.1"
    assert (await call(http, "DELETE", f"{SERVERS}/{server['id']}"))[0] == 400
    assert (await call(http, "POST", action, {"action": "terminate"}))[0] == 202
    status, body = await call(http, "GET", f"{SERVERS}/{server['id']}")
    assert (status, body["type"], body["resource"]) == (404, "not_found", "instance_server")
    assert [v["status"] for v in fake.volumes.values()] == ["available"]


async def test_an_attached_volume_cannot_be_deleted(http: aiohttp.ClientSession) -> None:
    server = await create(http)
    boot_id = server["volumes"]["0"]["id"]
    status, body = await call(http, "DELETE", f"{VOLUMES}/{boot_id}")
    assert (status, body["type"], body["precondition"]) == (412, "precondition_failed", "resource_still_in_use")


async def test_the_token_is_checked(fake: FakeScaleway) -> None:
    async with aiohttp.ClientSession(fake.url) as anonymous, anonymous.get(SERVERS) as resp:
        assert resp.status == 401 and (await resp.json())["type"] == "denied_authentication"


async def test_a_lost_reply_still_made_the_change(http: aiohttp.ClientSession, fake: FakeScaleway) -> None:
    fake.error_after_rate = 1.0
    status, _ = await call(http, "POST", VOLUMES, {"name": "v", "project_id": fake.project_id,
                                                   "from_empty": {"size": 10**10}})
    assert status == 500 and len(fake.volumes) == 1 and fake.injected_errors == 1


async def test_faults_can_be_limited_to_some_paths(http: aiohttp.ClientSession, fake: FakeScaleway) -> None:
    fake.error_rate, fake.error_after_rate, fake.fault_paths = 1.0, 1.0, ("/action",)
    status, body = await call(http, "POST", VOLUMES, {"name": "v", "project_id": fake.project_id,
                                                      "from_empty": {"size": 10**10}})
    assert status == 200 and fake.volumes == {body["id"]: body} and fake.injected_errors == 0
    server = await create(http)
    status, _ = await call(http, "POST", f"{SERVERS}/{server['id']}/action", {"action": "poweron"})
    assert status == 500 and fake.injected_errors == 1
    assert fake.servers[server["id"]]["state"] == "stopped", "refused before the change"


async def test_running_after_some_time(fake: FakeScaleway, http: aiohttp.ClientSession) -> None:
    fake.polls_to_running, fake.seconds_to_running = 1000, 0.05
    server = await create(http)
    await call(http, "POST", f"{SERVERS}/{server['id']}/action", {"action": "poweron"})
    assert (await call(http, "GET", f"{SERVERS}/{server['id']}"))[1]["server"]["state"] == "starting"
    await asyncio.sleep(0.06)
    assert (await call(http, "GET", f"{SERVERS}/{server['id']}"))[1]["server"]["state"] == "running"


async def test_user_data_is_text_kept_per_server_and_gone_with_it(
    http: aiohttp.ClientSession, fake: FakeScaleway
) -> None:
    server = await create(http)
    base = f"{SERVERS}/{server['id']}/user_data"
    async with http.patch(f"{base}/cloud-init", json={"a": 1}) as resp:
        assert resp.status == 400, "only text/plain bodies"
    async with http.patch(f"{base}/cloud-init", data="#cloud-config\n", headers={"Content-Type": "text/plain"}) as resp:
        assert resp.status == 204
    assert await call(http, "GET", base) == (200, {"user_data": ["cloud-init"]})
    async with http.get(f"{base}/cloud-init") as resp:
        assert (resp.status, resp.content_type, await resp.text()) == (200, "text/plain", "#cloud-config\n")
    assert (await call(http, "DELETE", f"{base}/cloud-init"))[0] == 204
    assert (await call(http, "GET", f"{base}/cloud-init"))[0] == 404
    assert await call(http, "GET", base) == (200, {"user_data": []})

    assert (await call(http, "PATCH", f"{base}/other", {"not": "text"}))[0] == 400
    async with http.patch(f"{base}/cloud-init", data="late", headers={"Content-Type": "text/plain"}) as resp:
        assert resp.status == 204
    await call(http, "POST", f"{SERVERS}/{server['id']}/action", {"action": "poweron"})
    assert fake.first_boot_cloud_init == {server["id"]: "late"}
    await call(http, "POST", f"{SERVERS}/{server['id']}/action", {"action": "terminate"})
    assert (await call(http, "GET", base))[0] == 404
    assert fake.user_data == {} and fake.first_boot_cloud_init == {server["id"]: "late"}
