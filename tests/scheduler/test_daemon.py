"""The daemon: leader election, and `inventiv scheduler` as a process beside the gateway on the mock cloud."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mock_cloud import reaping_mock_cloud
from pytest_aiohttp import AiohttpClient
from waiting import wait_until

from gateway.app import create_app
from inventiv.settings import Settings, settings_to_env
from scheduler.daemon import Daemon
from scheduler.leader import LeaderLock
from sql.api_key_store import create_api_key

SMALL = "Qwen/Qwen2.5-0.5B-Instruct"


async def test_one_leader_and_a_standby_that_takes_over(database_url: str) -> None:
    first, second = LeaderLock(database_url), LeaderLock(database_url)
    try:
        assert await first.try_acquire() is True
        assert await second.try_acquire() is False
        assert await first.try_acquire() is True, "the leader stays the leader"
        await first.release()  # what the leader's death does to its connection
        assert await second.try_acquire() is True
        assert await first.try_acquire() is False
    finally:
        await first.release()
        await second.release()


async def test_a_leader_whose_connection_was_cut_takes_the_lock_again(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The leader's session killed by the database (a failover, an admin): it notices, lets go and,
    the lock being free again, becomes the leader once more."""
    import logging

    import aiopg

    from scheduler.leader import LEADER_LOCK_KEY

    caplog.set_level(logging.WARNING, logger="scheduler.leader")
    lock = LeaderLock(database_url)
    try:
        assert await lock.try_acquire() is True
        # The session holding this database's leader lock (a bigint key: its high and low 32 bits). With a
        # timeout, pg_terminate_backend waits until that session is gone (PostgreSQL 14+); without, it only
        # signals it, and the leader's next check could still find its session alive.
        holder = (
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s"
            " AND objid = %s AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        async with aiopg.connect(database_url) as admin, admin.cursor() as cur:
            await cur.execute(holder, (LEADER_LOCK_KEY >> 32, LEADER_LOCK_KEY & 0xFFFFFFFF))
            assert await cur.fetchall() == [(True,)]
        assert await lock.try_acquire() is True
        assert "lost the leader connection" in caplog.text
        assert lock.held
    finally:
        await lock.release()
    assert not lock.held
    await lock.release()  # twice: nothing held, nothing to do


async def test_an_unreachable_database_elects_no_leader(caplog: pytest.LogCaptureFixture) -> None:
    lock = LeaderLock("postgresql://postgres@127.0.0.1:1/postgres")
    assert await lock.try_acquire() is False
    assert "database unreachable" in caplog.text
    assert not lock.held


async def test_jobs_run_only_while_leader_and_their_errors_do_not_escape(
    settings: Settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = Daemon(settings, LeaderLock(database_url))
    ran: list[str] = []

    async def job() -> None:
        ran.append("job")
        raise RuntimeError("boom")

    guarded = daemon.guarded("job", job)
    await guarded()
    assert ran == []
    daemon.is_leader = True
    await guarded()
    assert ran == ["job"] and "job failed" in caplog.text


@pytest.fixture
def daemon_env(settings: Settings, db_pool: Any) -> dict[str, str]:
    fast = settings.replace(
        scheduler_tick_s=0.2, health_interval_s=0.5, reconcile_interval_s=1.0, orphan_sweep_interval_s=1.0,
        scheduler_retry_base_s=0.1, scheduler_retry_max_s=0.5, log_format="json",
    )  # fmt: skip
    return {**os.environ, **settings_to_env(fast)}


@pytest.fixture
def start_scheduler(daemon_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(name: str = "scheduler") -> subprocess.Popen[bytes]:
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "inventiv", "scheduler"], env=daemon_env, stdout=out,
                                    stderr=subprocess.STDOUT)  # fmt: skip
        started.append((proc, log))
        return proc

    yield start
    for proc, _ in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
async def auth(db_pool: Any) -> dict[str, str]:
    """An admin key of the demo organization, made before the gateway loads its key table."""
    async with db_pool.acquire() as conn:
        async with conn.cursor() as cur:
            await cur.execute("SELECT id FROM organizations WHERE slug = 'demo'")
            (org_id,) = await cur.fetchone()
        key = (await create_api_key(conn, org_id, "test admin", ["admin", "inference"])).key
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def gateway(settings: Settings, aiohttp_client: AiohttpClient, auth: dict[str, str]) -> AsyncIterator[Any]:
    async with reaping_mock_cloud(settings.mock_cloud_path):
        yield await aiohttp_client(create_app(settings))


async def catalog_ids(db: Any) -> dict[str, str]:
    (row,) = await db.rows(
        "SELECT t.id AS instance_type_id, z.id AS zone_id, m.id AS model_id FROM instance_types t "
        "JOIN zones z ON z.provider_id = t.provider_id JOIN models m ON m.hf_repo_id = %s "
        "WHERE t.code = 'MOCK-GPU-S' AND z.code = 'local-1'",
        SMALL,
    )
    return {k: str(v) for k, v in row.items()}


async def wait_for(db: Any, instance_id: str, status: str, timeout_s: float = 45.0) -> dict[str, Any]:
    async def reached() -> dict[str, Any]:
        row: dict[str, Any] = await db.instance(instance_id)
        assert row["status"] == status, f"instance still {row['status']}: {row['error_code']} {row['error_message']}"
        return row

    return await wait_until(reached, timeout_s=timeout_s, interval_s=0.1, what=f"the instance to be {status}")


async def test_deploy_route_and_delete_through_the_gateway_with_the_scheduler_process(
    gateway: Any, start_scheduler: Any, db: Any, auth: dict[str, str]
) -> None:
    scheduler = start_scheduler()
    async with gateway.post("/deployments", json=await catalog_ids(db), headers=auth) as resp:
        assert resp.status == 202, await resp.text()
        instance_id = (await resp.json())["id"]

    await wait_for(db, instance_id, "ready")

    body = {"model": SMALL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
    async def routed() -> dict[str, Any] | None:
        async with gateway.post("/v1/chat/completions", json=body, headers=auth) as resp:
            if resp.status == 200:
                return dict(await resp.json())
            if resp.status != 503:
                pytest.fail(f"{resp.status}: {await resp.text()}")
        return None

    # The gateway's worker view refreshes every second.
    answer = await wait_until(routed, timeout_s=6, interval_s=0.1, what="the gateway to route to the new worker")
    assert answer["model"] == SMALL

    async with gateway.delete(f"/instances/{instance_id}", headers=auth) as resp:
        assert resp.status == 202, await resp.text()
    row = await wait_for(db, instance_id, "terminated")
    assert row["deleted_at"] is not None

    scheduler.send_signal(signal.SIGTERM)
    assert scheduler.wait(timeout=20) == 0


async def test_a_standby_scheduler_takes_over_when_the_leader_dies(
    gateway: Any, start_scheduler: Any, db: Any, auth: dict[str, str]
) -> None:
    leader = start_scheduler("leader")
    await wait_for_leader(db)
    standby = start_scheduler("standby")
    await asyncio.sleep(1.0)  # the standby has tried, and failed, to lead
    leader.kill()
    leader.wait(timeout=10)
    async with gateway.post("/deployments", json=await catalog_ids(db), headers=auth) as resp:
        assert resp.status == 202, await resp.text()
        instance_id = (await resp.json())["id"]

    await wait_for(db, instance_id, "ready")

    assert standby.poll() is None


async def wait_for_leader(db: Any, timeout_s: float = 30.0) -> None:
    from scheduler.leader import LEADER_LOCK_KEY

    async def leading() -> list[Any]:
        sql = "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted"
        return list(await db.rows(sql, LEADER_LOCK_KEY & 0xFFFFFFFF))

    await wait_until(leading, timeout_s=timeout_s, interval_s=0.1, what="a scheduler to become the leader")
