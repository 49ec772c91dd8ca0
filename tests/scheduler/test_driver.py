from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import pytest
from memory_provider import MemoryProvider
from waiting import wait_until

from scheduler.driver import Driver
from scheduler.runtime import ProviderSet, Runtime


async def test_two_schedulers_never_claim_the_same_instance(
    make_instance: Any, fast_settings: Any, db_pool: Any, redis: Any
) -> None:
    ids = {await make_instance() for _ in range(12)}
    clouds = [MemoryProvider("mock", polls_to_running=1000), MemoryProvider("mock", polls_to_running=1000)]
    runtimes = [
        Runtime(fast_settings, db_pool, redis, ProviderSet(fast_settings, lambda c, s, p=p: p), aiohttp.ClientSession())
        for p in clouds
    ]
    drivers = [Driver(rt, random.Random(i)) for i, rt in enumerate(runtimes)]
    try:
        first, second = await asyncio.gather(*(d.run_due() for d in drivers))
    finally:
        for d, rt in zip(drivers, runtimes, strict=True):
            await d.close()
            await rt.http.close()

    assert set(first) | set(second) == ids
    assert not set(first) & set(second)
    assert sum(len(c.servers) for c in clouds) == 12, "one server per instance, whoever created it"


async def test_a_claim_hides_the_instance_until_the_pass_hands_it_back(
    make_instance: Any, driver: Driver, db_pool: Any, provider: MemoryProvider
) -> None:
    instance_id = await make_instance()
    gate, entered = _hold_create(provider)
    assert await driver.start_due() == [instance_id]
    await entered.wait()
    assert await driver.start_due() == [], "a running pass is not claimed again"
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT claim_token IS NOT NULL AND next_attempt_at > now() + interval '50 seconds' "
                          "FROM instances WHERE id = %s", (instance_id,))  # fmt: skip
        assert (await cur.fetchone())[0], "the claim names its pass and pushed next_attempt_at past the lease"
    gate.set()
    await driver.wait([instance_id])
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT claim_token IS NULL AND next_attempt_at < now() + interval '1 second' "
                          "FROM instances WHERE id = %s", (instance_id,))  # fmt: skip
        assert (await cur.fetchone())[0], "the pass handed it back, due again soon"


async def test_an_unexpected_error_is_retried_with_backoff(
    make_instance: Any, driver: Driver, db: Any, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    instance_id = await make_instance()
    provider.fail("list_servers", RuntimeError("a bug"))

    await driver.run_due()

    row = await db.instance(instance_id)
    assert (row["status"], row["attempts"], row["error_code"]) == ("provisioning", 1, "INTERNAL_ERROR")
    assert "RuntimeError: a bug" in row["error_message"]
    create = next(a for a in await db.actions(instance_id) if a["action_type"] == "PROVIDER_CREATE")
    assert (create["status"], create["error_code"]) == ("failed", "INTERNAL_ERROR")
    assert "step failed unexpectedly" in caplog.text


async def test_close_waits_for_running_passes(make_instance: Any, driver: Driver, provider: MemoryProvider) -> None:
    await make_instance()
    await driver.start_due()
    assert driver.running
    await driver.close()
    assert not driver.running


def _hold_create(provider: MemoryProvider) -> tuple[asyncio.Event, asyncio.Event]:
    """Make create_server wait for `gate`; `entered` is set once a pass is inside it."""
    gate, entered = asyncio.Event(), asyncio.Event()
    original = provider.create_server

    async def held(spec: Any) -> Any:
        entered.set()
        await gate.wait()
        return await original(spec)

    provider.create_server = held  # type: ignore[method-assign]
    return gate, entered


async def test_a_command_and_the_interval_driver_never_run_two_passes_on_one_instance(
    make_instance: Any, driver: Driver, provider: MemoryProvider
) -> None:
    instance_id = await make_instance()
    gate, entered = _hold_create(provider)

    due, commanded = await asyncio.gather(driver.start_due(), driver.start(instance_id))
    await entered.wait()
    gate.set()
    await driver.wait([instance_id])
    await asyncio.sleep(0)

    assert (due == [instance_id]) != (commanded is not None), "exactly one of the two claims wins"
    assert provider.count("list_servers") == 1 and provider.count("create_server") == 1
    assert len(provider.servers) == 1


async def test_another_scheduler_cannot_claim_an_instance_whose_pass_is_running(
    make_instance: Any, driver: Driver, provider: MemoryProvider, fast_settings: Any, db_pool: Any, redis: Any
) -> None:
    instance_id = await make_instance()
    gate, entered = _hold_create(provider)
    other_cloud = MemoryProvider("mock")
    other_rt = Runtime(fast_settings, db_pool, redis, ProviderSet(fast_settings, lambda c, s: other_cloud),
                       aiohttp.ClientSession())  # fmt: skip
    other = Driver(other_rt, random.Random(1))
    try:
        assert await driver.start_due() == [instance_id]
        await entered.wait()
        assert await other.start(instance_id) is None, "a command on another scheduler waits for the claim"
        assert await other.start_due() == []
        gate.set()
        await driver.wait([instance_id])
        assert await other.start(instance_id) is not None, "a handed-back claim can be taken at once"
        await other.wait([instance_id])
    finally:
        await other.close()
        await other_rt.http.close()
    assert other_cloud.count("create_server") == 0, "the second scheduler adopted, it did not create"


async def test_a_long_pass_renews_its_claim(
    make_instance: Any, fast_settings: Any, db_pool: Any, redis: Any, provider: MemoryProvider
) -> None:
    settings = fast_settings.replace(scheduler_lease_s=0.3)
    instance_id = await make_instance()
    gate, entered = _hold_create(provider)
    rts = [Runtime(settings, db_pool, redis, ProviderSet(settings, lambda c, s: provider), aiohttp.ClientSession())
           for _ in range(2)]  # fmt: skip
    first, second = Driver(rts[0], random.Random(0)), Driver(rts[1], random.Random(1))
    try:
        assert await first.start_due() == [instance_id]
        await entered.wait()
        for _ in range(10):  # 1 s: three times the lease
            await asyncio.sleep(0.1)
            assert await second.start(instance_id) is None, "the running pass kept its claim"
        gate.set()
        await first.wait([instance_id])
    finally:
        for d in (first, second):
            await d.close()
        for rt in rts:
            await rt.http.close()
    assert provider.count("create_server") == 1


async def test_a_pass_that_lost_its_claim_is_stopped(
    make_instance: Any, fast_settings: Any, db_pool: Any, redis: Any, provider: MemoryProvider, db: Any
) -> None:
    settings = fast_settings.replace(scheduler_lease_s=0.3)
    instance_id = await make_instance()
    gate, entered = _hold_create(provider)
    rt = Runtime(settings, db_pool, redis, ProviderSet(settings, lambda c, s: provider), aiohttp.ClientSession())
    driver = Driver(rt, random.Random(0))
    try:
        [claimed] = await driver.start_due()
        await entered.wait()
        async with db_pool.acquire() as conn, conn.cursor() as cur:  # another pass took it over
            await cur.execute("UPDATE instances SET claim_token = gen_random_uuid() WHERE id = %s", (instance_id,))
        async with asyncio.timeout(2):  # stopped within a third of the lease, not left to run
            await driver.wait([instance_id])
    finally:
        gate.set()
        await driver.close()
        await rt.http.close()
    assert claimed == instance_id
    assert provider.servers == {}, "the stopped pass never reached the create"
    assert (await db.instance(instance_id))["claim_token"] is not None, "the other pass's claim is left alone"


async def test_a_pass_that_makes_progress_clears_the_retry_count_and_the_old_error(
    make_instance: Any, drive: Any, provider: MemoryProvider
) -> None:
    from providers.base import TransientError

    provider.polls_to_running = 10_000
    instance_id = await make_instance()
    provider.fail("power_on", TransientError("the API hiccupped"))

    row = await drive(instance_id, "booting")

    assert (row["attempts"], row["error_code"], row["error_message"]) == (0, None, None)


async def test_a_long_wait_is_looked_at_less_often_and_a_new_wait_starts_fast(
    make_instance: Any, drive: Any, driver: Driver, provider: MemoryProvider, db_pool: Any, db: Any,
    fast_settings: Any,
) -> None:  # fmt: skip
    async def timing() -> dict[str, Any]:
        (row,) = await db.rows(
            "SELECT extract(epoch FROM next_attempt_at - now())::float8 AS due_in_s, "
            "extract(epoch FROM now() - wait_started_at)::float8 AS waited_s FROM instances WHERE id = %s",
            instance_id,
        )
        return row

    provider.polls_to_running = 10_000
    instance_id = await make_instance()
    await drive(instance_id, "booting")
    fresh = await timing()
    assert fresh["waited_s"] is not None, "powered on, now waiting for the server to run"
    assert fresh["due_in_s"] <= 1.0, "a wait that just began is looked at again within a tick or so"
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE instances SET next_attempt_at = now(), wait_started_at = now() - interval '100 seconds' "
            "WHERE id = %s", (instance_id,))  # fmt: skip

    assert await driver.run_due() == [instance_id]

    late = await timing()
    assert late["waited_s"] >= 100, "a wait that goes on keeps the time it began"
    expected = min(fast_settings.scheduler_poll_max_s, 10.0)
    assert expected - 1 < late["due_in_s"] <= expected, "looked at again after a tenth of 100 s"


async def test_work_beyond_one_claim_is_picked_up_without_waiting_for_the_next_tick(
    make_instance: Any, driver: Driver, provider: MemoryProvider, db: Any
) -> None:
    from scheduler.driver import MAX_CONCURRENT_PASSES

    provider.polls_to_running = 10_000
    ids = {await make_instance() for _ in range(MAX_CONCURRENT_PASSES + 8)}

    assert len(await driver.start_due()) == MAX_CONCURRENT_PASSES
    async def all_booting() -> bool:
        rows = await db.rows("SELECT id::text FROM instances WHERE status = 'booting'")
        assert {r["id"] for r in rows} >= ids, f"{len(rows)} of {len(ids)} booting"
        return True

    await wait_until(all_booting, timeout_s=10, what="every instance to be booting")
