"""The scheduler end to end against the mock cloud: servers are real local worker processes."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from fleet import new_key
from memory_provider import Crash
from mock_cloud import open_mock_cloud
from waiting import wait_until

from gateway.app import create_app
from inventiv.settings import Settings
from providers.base import GB, ServerSpec
from providers.mock.cloud import MockCloud
from scheduler.driver import Driver
from scheduler.health import check_ready_workers
from scheduler.replacement import Retired, retire_dead_workers
from scheduler.runtime import ProviderSet, Runtime
from scheduler.sweep import sweep_orphans

SMALL = "Qwen/Qwen2.5-0.5B-Instruct"
ZONE = "local-1"
DEAD = "33333333-3333-3333-3333-333333333333"


@pytest.fixture
async def cloud(fast_settings: Settings) -> AsyncIterator[MockCloud]:
    """The test's own handle on the cloud the scheduler uses; every worker is reaped at the end."""
    async with open_mock_cloud(fast_settings.mock_cloud_path) as handle:
        yield handle


@pytest.fixture
async def rt(fast_settings: Settings, db_pool: Any, redis: Any, cloud: MockCloud) -> AsyncIterator[Runtime]:
    # The registry's provider: a MockCloud of its own on the same folder, as a scheduler process has.
    runtime = Runtime(fast_settings, db_pool, redis, ProviderSet(fast_settings), aiohttp.ClientSession())
    yield runtime
    await runtime.close()


async def chat(host: str, port: int, model: str, secret: str | None, expect: int = 200) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {secret}"} if secret is not None else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://{host}:{port}/v1/chat/completions", headers=headers,
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        ) as resp,
    ):  # fmt: skip
        assert resp.status == expect
        body: dict[str, Any] = await resp.json()
        return body


async def test_provision_serve_and_terminate_with_an_untracked_volume(
    make_instance: Any, drive: Any, db: Any, cloud: MockCloud, terminate: Any, rt: Runtime
) -> None:
    instance_id = await make_instance(model=SMALL)

    row = await drive(instance_id, "ready", timeout_s=40)

    assert (row["worker_status"], row["worker_model_id"]) == ("ready", SMALL)
    host, port, secret = row["ip_address"], row["worker_port"], rt.secrets.for_instance(instance_id)
    assert (await chat(host, port, SMALL, secret))["model"] == SMALL
    # The worker serves its secret's holders only (the gateway, the scheduler), nobody else.
    for other in (None, "a-guess", rt.secrets.for_instance(str(uuid.uuid4()))):
        refused = await chat(host, port, SMALL, other, expect=401)
        assert refused["error"]["code"] == "invalid_api_key"
    assert await db.storage_sizes_gb(instance_id) == [20, 100]
    extra = await cloud.create_volume(ZONE, "by-hand", 5 * GB, ["operator"])
    await cloud.attach_volume(ZONE, row["provider_instance_id"], extra.id)
    await terminate(instance_id)

    await drive(instance_id, "terminated", timeout_s=30)

    state = await cloud.snapshot()
    assert state["servers"] == {} and state["volumes"] == {}
    assert extra.id in {v["provider_volume_id"] for v in await db.volumes(instance_id)}
    with pytest.raises(aiohttp.ClientError):
        await chat(host, port, SMALL, secret)


async def test_a_restarted_scheduler_adopts_the_server_a_crash_left(
    make_instance: Any, fast_settings: Settings, db_pool: Any, redis: Any, rt: Runtime, drive: Any,
    cloud: MockCloud, expire_claim: Any,
) -> None:  # fmt: skip
    instance_id = await make_instance(model=SMALL, data_volume_gb=0)
    first = ProviderSet(fast_settings)
    dying = Runtime(fast_settings, db_pool, redis, first, aiohttp.ClientSession())
    provider = first.get("mock")
    create = provider.create_server

    async def create_then_die(spec: ServerSpec) -> Any:
        await create(spec)
        raise Crash("after create_server")

    provider.create_server = create_then_die  # type: ignore[method-assign]
    try:
        task = await Driver(dying).start(instance_id)
        assert task is not None
        with pytest.raises(Crash):
            await task
    finally:
        await dying.close()
    await expire_claim(instance_id)

    row = await drive(instance_id, "ready", timeout_s=40)

    assert list((await cloud.snapshot())["servers"]) == [row["provider_instance_id"]]


async def test_a_server_that_cannot_be_powered_on_is_cleaned_up(
    make_instance: Any, drive: Any, db: Any, cloud: MockCloud
) -> None:
    instance_id = await make_instance(model=SMALL)
    await cloud.fail_power_on(f"instance={instance_id}", "quota")

    row = await drive(instance_id, "failed")

    assert row["error_code"] == "PROVIDER_QUOTA_EXCEEDED"
    state = await cloud.snapshot()
    assert state["servers"] == {} and state["volumes"] == {}


async def test_the_sweep_removes_what_a_lost_instance_left_in_the_mock_cloud(
    make_instance: Any, db: Any, db_pool: Any, rt: Runtime, cloud: MockCloud
) -> None:
    used = await make_instance(model=SMALL)
    async with db_pool.acquire() as conn, conn.cursor() as cur:  # it asked for a server in this zone
        await cur.execute("UPDATE instances SET create_requested_at = now() WHERE id = %s", (used,))
    tags = ("inventiv", f"instance={DEAD}")
    server = await cloud.create_server(ServerSpec("inventiv-33333333", ZONE, "MOCK-GPU-S", tags, model=SMALL))
    data = await cloud.create_volume(ZONE, "inventiv-33333333-data", 10 * GB, tags)
    await cloud.attach_volume(ZONE, server.id, data.id)
    await cloud.power_on(ZONE, server.id)
    other = await cloud.create_volume(ZONE, "staging-data", GB, ("staging", f"instance={DEAD}"))
    rt.settings = rt.settings.replace(orphan_grace_s=0)

    await sweep_orphans(rt)  # the server (its worker stopped), then
    await sweep_orphans(rt)  # the data volume it left detached

    state = await cloud.snapshot()
    assert state["servers"] == {}
    assert list(state["volumes"]) == [other.id], "another deployment's volume is never touched"
    deleted = await db.rows(
        "SELECT action_type FROM action_logs WHERE action_type LIKE 'ORPHAN_%%' AND status = 'success' "
        "AND NOT metadata ? 'skipped' ORDER BY created_at"
    )
    assert [r["action_type"] for r in deleted] == ["ORPHAN_SERVER_DELETE", "ORPHAN_VOLUME_DELETE"]


async def test_a_deployed_worker_serves_through_the_gateway_and_refuses_everyone_else(
    make_instance: Any, drive: Any, rt: Runtime, db_pool: Any, aiohttp_client: Any, fast_settings: Settings
) -> None:
    instance_id = await make_instance(model=SMALL, data_volume_gb=0)
    row = await drive(instance_id, "ready", timeout_s=40)
    key = await new_key(db_pool)
    gateway = await aiohttp_client(create_app(fast_settings))

    async with gateway.post(
        "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
        json={"model": SMALL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    ) as resp:  # fmt: skip
        assert resp.status == 200, await resp.text()
        assert resp.headers["X-Inventiv-Instance"] == instance_id
    # The same request straight to the worker, with the tenant's key (or none): refused.
    for headers in ({"Authorization": f"Bearer {key}"}, {}):
        async with aiohttp.ClientSession() as http, http.post(
            f"http://{row['ip_address']}:{row['worker_port']}/v1/chat/completions", headers=headers,
            json={"model": SMALL, "messages": [{"role": "user", "content": "hi"}]},
        ) as direct:  # fmt: skip
            assert direct.status == 401


async def test_a_dead_worker_is_terminated_and_its_replacement_serves(
    make_instance: Any, drive: Any, db: Any, cloud: MockCloud, rt: Runtime
) -> None:
    instance_id = await make_instance(model=SMALL, data_volume_gb=0)
    await db.rows("UPDATE instances SET replace_on_failure = true WHERE id = %s RETURNING id", instance_id)
    row = await drive(instance_id, "ready", timeout_s=40)
    # Silent for a second and it is stale; for two, dead.
    rt.settings = rt.settings.replace(worker_stale_after_s=1.0, worker_dead_after_s=2.0, worker_health_failures=1)
    pid = (await cloud.snapshot())["servers"][row["provider_instance_id"]]["process"]["pid"]
    os.killpg(pid, signal.SIGKILL)

    async def retired() -> list[Retired]:
        await check_ready_workers(rt)
        done = await retire_dead_workers(rt)
        assert done, await db.instance(instance_id)
        return done

    (dead,) = await wait_until(retired, timeout_s=20, interval_s=0.2, what="the dead worker to be retired")
    assert dead.instance_id == instance_id and dead.replacement_id is not None
    old = await drive(instance_id, "terminated", timeout_s=30)
    assert old["error_code"] == "WORKER_DEAD"
    new = await drive(dead.replacement_id, "ready", timeout_s=40)
    assert (new["model_id"], new["replaces_instance_id"]) == (old["model_id"], instance_id)
    assert list((await cloud.snapshot())["servers"]) == [new["provider_instance_id"]]
    assert (await chat(new["ip_address"], new["worker_port"], SMALL, rt.secrets.for_instance(dead.replacement_id)))
