from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import pytest
from memory_provider import MemoryProvider

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
    gate = asyncio.Event()
    entered = asyncio.Event()
    original = provider.create_server

    async def slow_create(spec: Any) -> Any:
        entered.set()
        await gate.wait()
        return await original(spec)

    provider.create_server = slow_create  # type: ignore[method-assign]
    assert await driver.start_due() == [instance_id]
    await entered.wait()
    assert await driver.start_due() == [], "a running pass is not claimed again"
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT next_attempt_at > now() + interval '200 seconds' FROM instances WHERE id = %s",
                          (instance_id,))  # fmt: skip
        assert (await cur.fetchone())[0], "the claim pushed next_attempt_at past the lease"
    gate.set()
    await driver.wait([instance_id])
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT next_attempt_at < now() + interval '1 second' FROM instances WHERE id = %s",
                          (instance_id,))  # fmt: skip
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
