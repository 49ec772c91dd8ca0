"""Scheduler test fixtures: a runtime on the test database with an in-memory cloud, and instance rows
made the way the control API makes them."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import aiopg
import pytest
import redis.asyncio as aioredis
from memory_provider import MemoryProvider
from waiting import wait_until

from inventiv.settings import Settings
from scheduler.driver import Driver
from scheduler.runtime import ProviderSet, Runtime

MakeInstance = Callable[..., Awaitable[str]]
Drive = Callable[..., Awaitable[dict[str, Any]]]
RunPass = Callable[[str], Awaitable[None]]
ExpireClaim = Callable[[str], Awaitable[None]]


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    # Waits and backoffs of a few milliseconds: the tests drive passes in a loop instead of sleeping.
    return settings.replace(
        scheduler_tick_s=0.01, scheduler_retry_base_s=0.01, scheduler_retry_max_s=0.05, health_timeout_s=2.0
    )


@pytest.fixture
def provider() -> MemoryProvider:
    return MemoryProvider("mock")


@pytest.fixture
async def rt(
    fast_settings: Settings, db_pool: aiopg.Pool, redis: aioredis.Redis, provider: MemoryProvider
) -> AsyncIterator[Runtime]:
    runtime = Runtime(fast_settings, db_pool, redis, ProviderSet(fast_settings, lambda code, s: provider),
                      aiohttp.ClientSession())  # fmt: skip
    yield runtime
    await runtime.http.close()


@pytest.fixture
async def driver(rt: Runtime) -> AsyncIterator[Driver]:
    d = Driver(rt, random.Random(0))
    yield d
    await d.close()


@pytest.fixture
def make_instance(db_pool: aiopg.Pool) -> MakeInstance:
    async def make(
        *,
        provider: str = "mock",
        zone: str = "local-1",
        instance_type: str = "MOCK-GPU-S",
        model: str | None = "Qwen/Qwen2.5-7B-Instruct",
        data_volume_gb: int | None = None,
        delete_on_terminate: bool = True,
        deadline_s: float = 600.0,
    ) -> str:
        async with db_pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                """
                INSERT INTO instances (provider_id, zone_id, instance_type_id, model_id, organization_id, status,
                                       worker_port, data_volume_gb, data_volume_delete_on_terminate,
                                       provisioning_deadline_at)
                SELECT p.id, z.id, t.id, (SELECT id FROM models WHERE hf_repo_id = %(model)s),
                       (SELECT id FROM organizations WHERE slug = 'demo'), 'provisioning', t.worker_port,
                       %(gb)s, %(delete)s, now() + make_interval(secs => %(deadline)s)
                FROM providers p JOIN zones z ON z.provider_id = p.id JOIN instance_types t ON t.provider_id = p.id
                WHERE p.code = %(provider)s AND z.code = %(zone)s AND t.code = %(type)s
                RETURNING id
                """,
                {"provider": provider, "zone": zone, "type": instance_type, "model": model, "gb": data_volume_gb,
                 "delete": delete_on_terminate, "deadline": deadline_s},
            )  # fmt: skip
            row = await cur.fetchone()
            assert row is not None, f"no catalog entry {provider}/{zone}/{instance_type}"
            instance_id = str(row[0])
            await cur.execute(
                "INSERT INTO action_logs (instance_id, action_type, component, status) "
                "VALUES (%s, 'REQUEST_CREATE', 'api', 'success')",
                (instance_id,),
            )
        return instance_id

    return make


@pytest.fixture
def drive(driver: Driver, db: Db) -> Drive:
    """Run passes until the instance reaches one of `statuses` (and, for released ones, deleted_at)."""

    async def run(instance_id: str, *statuses: str, timeout_s: float = 20.0) -> dict[str, Any]:
        async def reached() -> dict[str, Any]:
            await driver.run_due()
            row = await db.instance(instance_id)
            released = row["status"] not in ("terminating", "failed") or row["deleted_at"] is not None
            assert row["status"] in statuses and released, f"instance still {row['status']}: {row}"
            return row

        return await wait_until(reached, timeout_s=timeout_s, interval_s=0.01, what=f"the instance to be {statuses}")

    return run


@pytest.fixture
def run_pass(driver: Driver) -> RunPass:
    """Claim the instance as a command would and run one pass; a `Crash` (the scheduler dying) goes through,
    leaving the claim held as a dead scheduler leaves it."""

    async def run(instance_id: str) -> None:
        task = await driver.start(instance_id)
        assert task is not None, "the instance could not be claimed"
        await task

    return run


@pytest.fixture
def expire_claim(db_pool: aiopg.Pool) -> ExpireClaim:
    """What time does for a dead scheduler's claim: its lease runs out and the instance is due."""

    async def run(instance_id: str) -> None:
        async with db_pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "UPDATE instances SET next_attempt_at = now(), claim_expires_at = now() WHERE id = %s", (instance_id,)
            )

    return run


@pytest.fixture
def terminate(db_pool: aiopg.Pool) -> Callable[[str], Awaitable[None]]:
    """What the control API's DELETE does to the row."""

    async def run(instance_id: str) -> None:
        async with db_pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "UPDATE instances SET status = 'terminating', terminating_at = now(), next_attempt_at = now() "
                "WHERE id = %s",
                (instance_id,),
            )

    return run


class Db:
    """Reads of what the scheduler wrote, for assertions."""

    def __init__(self, pool: aiopg.Pool) -> None:
        self.pool = pool

    async def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql, params)
            assert cur.description is not None
            names = [c.name for c in cur.description]
            return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]

    async def instance(self, instance_id: str) -> dict[str, Any]:
        (row,) = await self.rows("SELECT * FROM instances WHERE id = %s", instance_id)
        return row

    async def actions(self, instance_id: str) -> list[dict[str, Any]]:
        return await self.rows(
            "SELECT action_type, status, error_code, error_message, metadata, duration_ms FROM action_logs "
            "WHERE instance_id = %s AND component = 'scheduler' ORDER BY created_at, completed_at NULLS LAST",
            instance_id,
        )

    async def action_types(self, instance_id: str) -> list[str]:
        return [a["action_type"] for a in await self.actions(instance_id)]

    async def volumes(self, instance_id: str) -> list[dict[str, Any]]:
        return await self.rows(
            "SELECT * FROM instance_volumes WHERE instance_id = %s ORDER BY is_boot DESC, created_at", instance_id
        )

    async def storage_sizes_gb(self, instance_id: str) -> list[int]:
        """What the API shows: live volumes, boot first, in GB."""
        rows = await self.volumes(instance_id)
        return [v["size_bytes"] // 10**9 for v in rows if v["deleted_at"] is None]


@pytest.fixture
def db(db_pool: aiopg.Pool) -> Db:
    return Db(db_pool)
