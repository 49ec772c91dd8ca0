"""The scheduler end to end through the real Scaleway provider against the stateful fake Scaleway API.

Health checks reach a real mock worker: the fake gives servers the address 127.0.0.1 and the Scaleway
types' worker_port is pointed at the worker's port.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from fake_scaleway import FakeScaleway, run_fake_scaleway
from fleet import point_provider_types_at
from memory_provider import Crash, serve_worker
from prometheus_client import REGISTRY
from waiting import wait_until

from inventiv.settings import Settings
from providers.base import GB, ServerSpec
from scheduler.driver import Driver
from scheduler.runtime import ProviderSet, Runtime
from scheduler.sweep import Kind, sweep_orphans

ZONE = "fr-par-2"
L40S = "L40S-1-48G"
MODEL_7B = "Qwen/Qwen2.5-7B-Instruct"
TAG = "inventiv"


@pytest.fixture
async def fake() -> AsyncIterator[FakeScaleway]:
    async with run_fake_scaleway(polls_to_running=2, polls_to_gone=1) as running:
        yield running


@pytest.fixture
async def rt(fast_settings: Settings, db_pool: Any, redis: Any, fake: FakeScaleway) -> AsyncIterator[Runtime]:
    settings = fast_settings.replace(**fake.settings_changes())
    async with serve_worker(MODEL_7B) as (_, port):
        await point_provider_types_at(db_pool, "scaleway", port)
        # The registry's providers: the real Scaleway provider, pointed at the fake.
        runtime = Runtime(settings, db_pool, redis, ProviderSet(settings), aiohttp.ClientSession())
        try:
            yield runtime
        finally:
            await runtime.close()


@pytest.fixture
def scw_instance(make_instance: Any) -> Any:
    async def make(**kw: Any) -> str:
        instance_id: str = await make_instance(provider="scaleway", zone=ZONE, instance_type=L40S, **kw)
        return instance_id

    return make


def assert_empty(fake: FakeScaleway) -> None:
    assert fake.servers == {}, "no server left"
    assert fake.volumes == {}, "no block volume left"
    assert fake.local_volumes == {}, "no local volume left"


async def test_l40s_resolves_its_image_becomes_ready_and_leaves_nothing(
    scw_instance: Any, drive: Any, db: Any, fake: FakeScaleway, terminate: Any
) -> None:
    instance_id = await scw_instance()

    row = await drive(instance_id, "ready")

    assert row["worker_status"] == "ready" and row["worker_model_id"] == MODEL_7B
    (params,) = await db.rows("SELECT allocation_params FROM instance_types WHERE code = %s", L40S)
    image_id = params["allocation_params"]["scaleway"]["boot_image_id"]
    assert params["allocation_params"]["scaleway"]["boot_image_zone"] == ZONE
    (server,) = fake.servers.values()
    assert server["image"]["id"] == image_id and server["state"] == "running"
    assert server["name"] == f"inventiv-{instance_id[:8]}"
    assert server["tags"] == [TAG, f"instance={instance_id}", f"model={MODEL_7B}", "engine=vllm"]
    # A 100 GB root (room for the worker container, INVENTIV_SCW_WORKER_ROOT_VOLUME_GB) and the 7B's data volume.
    assert await db.storage_sizes_gb(instance_id) == [100, 200]
    booted_with = fake.first_boot_cloud_init[server["id"]]
    assert booted_with is not None and f"MODEL={MODEL_7B}\n" in booted_with, "cloud-init set before power-on"
    assert all(v["tags"] == [TAG, f"instance={instance_id}"] for v in fake.volumes.values()), "boot volume tagged"
    # The worker's port answers the health checks from this machine, and no one else.
    assert server["security_group"]["name"] == f"{TAG}-workers"
    assert fake.reachable(server["id"], "127.0.0.1", 8000) and not fake.reachable(server["id"], "192.0.2.1", 8000)

    await terminate(instance_id)
    await drive(instance_id, "terminated")

    assert_empty(fake)


@pytest.mark.parametrize(
    ("asked", "persistent", "sizes", "left_gb"),
    [(0, False, [100], []), (500, False, [100, 500], []), (300, True, [100, 300], [300])],
)
async def test_data_volume_zero_500_and_persistent(
    scw_instance: Any, drive: Any, db: Any, fake: FakeScaleway, terminate: Any,
    asked: int, persistent: bool, sizes: list[int], left_gb: list[int],
) -> None:  # fmt: skip
    instance_id = await scw_instance(data_volume_gb=asked, delete_on_terminate=not persistent)
    await drive(instance_id, "ready")
    assert await db.storage_sizes_gb(instance_id) == sizes

    await terminate(instance_id)
    await drive(instance_id, "terminated")

    assert fake.servers == {}
    assert [v["size"] // GB for v in fake.volumes.values()] == left_gb
    for volume in fake.volumes.values():
        assert volume["status"] == "available" and volume["references"] == [], "kept detached"
    kept = [v for v in await db.volumes(instance_id) if v["deleted_at"] is None]
    assert [(v["provider_volume_id"], v["detached_at"] is not None) for v in kept] == [
        (vid, True) for vid in fake.volumes
    ]


async def test_terminate_tracks_and_deletes_volumes_it_never_created(
    scw_instance: Any, drive: Any, db: Any, fake: FakeScaleway, rt: Runtime, terminate: Any
) -> None:
    instance_id = await scw_instance(data_volume_gb=0)
    row = await drive(instance_id, "ready")
    server_id = row["provider_instance_id"]
    scratch = fake.add_scratch_volume(server_id, 100 * GB)
    provider = rt.providers.get("scaleway")
    by_hand = await provider.create_volume(ZONE, "attached-by-hand", 50 * GB, ["operator"])
    await provider.attach_volume(ZONE, server_id, by_hand.id)
    await terminate(instance_id)

    await drive(instance_id, "terminated")

    assert_empty(fake)
    tracked = {v["provider_volume_id"]: v for v in await db.volumes(instance_id)}
    assert {scratch["id"], by_hand.id} <= set(tracked)
    assert all(v["deleted_at"] is not None for v in tracked.values())


async def test_a_crash_between_create_and_record_adopts_the_server(
    scw_instance: Any, drive: Any, run_pass: Any, expire_claim: Any, fake: FakeScaleway, rt: Runtime
) -> None:
    instance_id = await scw_instance()
    provider = rt.providers.get("scaleway")
    create = provider.create_server

    async def create_then_die(spec: ServerSpec) -> Any:
        await create(spec)
        raise Crash("after create_server")

    provider.create_server = create_then_die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await run_pass(instance_id)
    provider.create_server = create  # type: ignore[method-assign]
    await expire_claim(instance_id)

    row = await drive(instance_id, "ready")

    assert [(m, p) for m, p in fake.requests if m == "POST" and p.endswith("/servers")] == [
        ("POST", f"/instance/v1/zones/{ZONE}/servers")
    ], "created once"
    assert list(fake.servers) == [row["provider_instance_id"]]


async def test_a_server_whose_user_data_could_not_be_written_is_adopted_and_boots_with_it(
    scw_instance: Any, drive: Any, run_pass: Any, db: Any, db_pool: Any, fake: FakeScaleway
) -> None:
    instance_id = await scw_instance()
    fake.error_rate, fake.fault_paths = 1.0, ("/user_data/cloud-init",)
    await run_pass(instance_id)
    create = next(a for a in await db.actions(instance_id) if a["action_type"] == "PROVIDER_CREATE")
    assert (create["status"], create["error_code"]) == ("failed", "PROVIDER_TRANSIENT")
    fake.error_rate = 0.0
    async with db_pool.acquire() as conn, conn.cursor() as cur:  # no need to wait for the backoff
        await cur.execute("UPDATE instances SET next_attempt_at = now() WHERE id = %s", (instance_id,))

    row = await drive(instance_id, "ready")

    [server_id] = fake.servers
    assert row["provider_instance_id"] == server_id
    assert [p for m, p in fake.requests if m == "POST" and p.endswith("/servers")] == [
        f"/instance/v1/zones/{ZONE}/servers"
    ], "created once, then adopted"
    booted_with = fake.first_boot_cloud_init[server_id]
    assert booted_with is not None and f"MODEL={MODEL_7B}\n" in booted_with


async def test_a_server_that_cannot_be_powered_on_is_cleaned_up(
    scw_instance: Any, drive: Any, db: Any, fake: FakeScaleway
) -> None:
    instance_id = await scw_instance()
    fake.refuse_poweron.add(f"inventiv-{instance_id[:8]}")

    row = await drive(instance_id, "failed")

    assert row["error_code"] == "PROVIDER_OUT_OF_STOCK"
    assert_empty(fake)
    start = next(a for a in await db.actions(instance_id) if a["action_type"] == "PROVIDER_START")
    assert start["status"] == "failed" and start["error_code"] == "PROVIDER_OUT_OF_STOCK"


async def test_twenty_instances_created_and_terminated_concurrently_through_random_500s(
    scw_instance: Any, driver: Driver, db: Any, fake: FakeScaleway, terminate: Any
) -> None:
    rng = random.Random(5)
    sizes: list[int | None] = [None, 0, 100, 500]
    ids = [await scw_instance(data_volume_gb=rng.choice(sizes), delete_on_terminate=True) for _ in range(20)]
    fake.error_rate, fake.error_after_rate, fake.rng = 0.1, 0.05, random.Random(7)
    # Half are terminated while they are still being provisioned, half once they are ready.
    early, late = ids[:10], ids[10:]

    await run_until(driver, db, lambda rows: all(r["provider_instance_id"] for r in rows.values()), early)
    for instance_id in early:
        await terminate(instance_id)
    await run_until(driver, db, lambda rows: all(r["status"] == "ready" for r in rows.values()), late)
    for instance_id in late:
        await terminate(instance_id)
    await run_until(
        driver, db, lambda rows: all(r["status"] == "terminated" and r["deleted_at"] for r in rows.values()), ids
    )

    assert fake.injected_errors > 10, "the fake did fail calls"
    assert_empty(fake)
    (count,) = await db.rows(
        "SELECT count(*) AS n FROM instance_volumes WHERE instance_id = ANY(%s::uuid[]) AND deleted_at IS NULL", ids
    )
    assert count["n"] == 0
    creates = [p for m, p in fake.requests if m == "POST" and p.endswith("/servers")]
    assert len(creates) >= 20


async def run_until(driver: Driver, db: Any, done: Any, ids: list[str], timeout_s: float = 30.0) -> None:
    async def all_done() -> bool:
        await driver.run_due()
        rows = {i: await db.instance(i) for i in ids}
        lagging = {i: r for i, r in rows.items() if not done({i: r})}
        assert not lagging, {i: (r["status"], r["error_code"], r["error_message"]) for i, r in lagging.items()}
        return True

    await wait_until(all_done, timeout_s=timeout_s, interval_s=0.01, what=f"{len(ids)} instances")


async def test_the_workers_security_group_is_swept_once_the_zone_has_no_live_instance(
    scw_instance: Any, drive: Any, db: Any, fake: FakeScaleway, terminate: Any, rt: Runtime
) -> None:
    first, second = await scw_instance(), await scw_instance()
    await drive(first, "ready")
    await drive(second, "ready")
    [group] = fake.security_groups.values()
    rt.settings = rt.settings.replace(orphan_grace_s=0.0)
    await terminate(first)
    await drive(first, "terminated")

    assert await sweep_orphans(rt) == [] and list(fake.security_groups) == [group["id"]], "still in use"

    await terminate(second)
    await drive(second, "terminated")
    [orphan] = await sweep_orphans(rt)

    assert (orphan.kind, orphan.id) == (Kind.FIREWALL, group["id"])
    assert fake.security_groups == {}
    [deleted] = await db.rows("SELECT metadata FROM action_logs WHERE action_type = 'ORPHAN_FIREWALL_DELETE'")
    assert deleted["metadata"]["resource_id"] == group["id"]


async def test_without_credentials_the_instance_fails_and_is_released_at_once(
    fast_settings: Settings, db_pool: Any, redis: Any, scw_instance: Any, db: Any
) -> None:
    settings = fast_settings.replace(scw_secret_key=None, scw_default_project_id=None)
    runtime = Runtime(settings, db_pool, redis, ProviderSet(settings), aiohttp.ClientSession())
    driver = Driver(runtime)
    instance_id = await scw_instance()
    try:
        for _ in range(20):
            await driver.run_due()
            row = await db.instance(instance_id)
            if row["deleted_at"] is not None:
                break
            await asyncio.sleep(0.01)
    finally:
        await driver.close()
        await runtime.close()

    assert (row["status"], row["error_code"]) == ("failed", "PROVIDER_NOT_CONFIGURED")
    assert row["deleted_at"] is not None
    cleanup = next(a for a in await db.actions(instance_id) if a["action_type"] == "EXECUTE_CLEANUP")
    assert cleanup["status"] == "success" and "provider_unavailable" in cleanup["metadata"]


async def _retry_until(driver: Driver, db: Any, instance_id: str, attempts: int) -> dict[str, Any]:
    """Run passes until the instance's release failed this many times in a row."""

    async def failed_enough() -> dict[str, Any]:
        row: dict[str, Any] = await db.instance(instance_id)
        if row["attempts"] < attempts:
            await driver.run_due()
        assert row["attempts"] >= attempts, row
        return row

    return await wait_until(failed_enough, timeout_s=20, interval_s=0.02, what=f"{attempts} failed releases")


def _release_retries(code: str) -> float:
    return REGISTRY.get_sample_value("inventiv_scheduler_release_retries_total", {"error_code": code}) or 0.0


async def test_a_release_the_cloud_refuses_says_why_keeps_trying_and_completes_once_it_can(
    scw_instance: Any, drive: Any, driver: Driver, db: Any, fake: FakeScaleway, terminate: Any, rt: Runtime
) -> None:
    instance_id = await scw_instance(data_volume_gb=0)
    await drive(instance_id, "ready")
    working = rt.providers
    before = _release_retries("PROVIDER_NOT_CONFIGURED"), _release_retries("PROVIDER_AUTH")
    rt.providers = ProviderSet(rt.settings.replace(scw_secret_key=None))  # the key was taken away
    await terminate(instance_id)

    row = await _retry_until(driver, db, instance_id, 3)

    assert (row["status"], row["error_code"]) == ("terminating", "PROVIDER_NOT_CONFIGURED")
    assert "SCW_SECRET_KEY" in row["error_message"]
    retries = [a for a in await db.actions(instance_id) if a["action_type"] == "RELEASE_RETRY"]
    assert [(a["error_code"], a["metadata"]["attempt"]) for a in retries[:3]] == [
        ("PROVIDER_NOT_CONFIGURED", n) for n in (1, 2, 3)
    ]
    assert all(a["status"] == "failed" and a["metadata"]["retry_in_s"] >= 0 for a in retries)
    assert _release_retries("PROVIDER_NOT_CONFIGURED") >= before[0] + 3
    assert len(fake.servers) == 1, "nothing could be asked of the cloud"

    # A key the cloud refuses (401) is retried the same way: the operator may fix it on the cloud's side.
    refused = ProviderSet(rt.settings.replace(scw_secret_key="00000000-0000-0000-0000-000000000000"))
    rt.providers = refused
    row = await _retry_until(driver, db, instance_id, row["attempts"] + 2)
    assert (row["status"], row["error_code"]) == ("terminating", "PROVIDER_AUTH")
    assert _release_retries("PROVIDER_AUTH") >= before[1] + 2
    await refused.close()

    rt.providers = working  # the key is back
    await driver.wake(instance_id)  # as the next tick would, without waiting out the backoff
    row = await drive(instance_id, "terminated")

    assert (row["error_code"], row["error_message"], row["attempts"]) == (None, None, 0)
    assert_empty(fake)
