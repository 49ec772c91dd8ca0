"""N instances created and released on the mock cloud, whose servers are real local worker processes.

    python -m benchmarks.scheduler --mock 50

A fresh database and Redis prefix, a mock cloud folder, and a real `inventiv scheduler` process at its
default settings. N rows are inserted as POST /deployments inserts them (MOCK-GPU-S, the 0.5B model),
each with its PROVISION command; once all are ready, each is asked to terminate as DELETE does.
Reported: wall time to all ready and to all released, the scheduler's own CPU (its utime + stime, not
the worker processes it started), database transactions per instance, and what was left running.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import aiopg
import redis.asyncio as aioredis

from benchmarks.processes import Started, stop
from benchmarks.procfs import own_cpu_seconds
from benchmarks.scheduler_bench import _start, _transactions, insert_instances, provision_all, release_all
from benchmarks.services import bench_services
from inventiv.settings import Settings
from providers.mock.cloud import stop_all_workers
from sql.migrate import migrate
from sql.pool import create_pool
from sql.seed import seed_demo_catalog

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
_INSERT = """
INSERT INTO instances (provider_id, zone_id, instance_type_id, model_id, organization_id, status, worker_port,
                       provisioning_deadline_at)
SELECT p.id, z.id, t.id, (SELECT id FROM models WHERE hf_repo_id = %(model)s),
       (SELECT id FROM organizations WHERE slug = 'demo'), 'provisioning', t.worker_port, now() + interval '1 hour'
FROM providers p JOIN zones z ON z.provider_id = p.id JOIN instance_types t ON t.provider_id = p.id
WHERE p.code = 'mock' AND z.code = 'local-1' AND t.code = 'MOCK-GPU-S'
RETURNING id
"""


@dataclass
class MockFigures:
    instances: int
    ready_s: float = 0.0
    released_s: float = 0.0
    scheduler_cpu_s: float = 0.0
    db_transactions_per_instance: float = 0.0
    not_terminated: int = 0
    workers_left: int = 0


async def run_mock(instances: int, run_dir: Path) -> MockFigures:
    figures = MockFigures(instances)
    cloud_dir = run_dir / "mock-cloud"
    async with bench_services(run_dir) as services:
        pool = await create_pool(services.database_url, maxsize=2)
        redis = aioredis.Redis.from_url(services.redis_url)
        env = {
            **os.environ, **services.gateway_env(), "INVENTIV_MOCK_CLOUD_DIR": str(cloud_dir),
            "INVENTIV_DATA_DIR": str(run_dir / "data"), "INVENTIV_WORKER_SECRET_KEY": secrets.token_urlsafe(48),
            "INVENTIV_SCHEDULER_METRICS_PORT": "0", "INVENTIV_LOG_FORMAT": "json",
        }  # fmt: skip
        try:
            await migrate(pool)
            await seed_demo_catalog(pool)
            scheduler = await _start(env, run_dir / "scheduler-mock.log")
            try:
                await _measure(figures, pool, redis, Settings(redis_prefix=services.redis_prefix), scheduler)
            finally:
                await stop(scheduler)
        finally:
            figures.workers_left = stop_all_workers(cloud_dir)
            pool.close()
            await pool.wait_closed()
            await redis.aclose()
    return figures


async def _measure(figures: MockFigures, pool: aiopg.Pool, redis: aioredis.Redis, settings: Settings,
                   scheduler: Started) -> None:  # fmt: skip
    n = figures.instances
    ids = await insert_instances(pool, _INSERT, {"model": MODEL}, n)
    # The scheduler's own CPU: the mock cloud's workers are its children, and their CPU is not its.
    cpu0, tx0 = own_cpu_seconds(scheduler.pid), await _transactions(pool)
    figures.ready_s = await provision_all(pool, redis, settings, ids, scheduler)
    figures.released_s = await release_all(pool, redis, settings, ids, scheduler)
    figures.scheduler_cpu_s = round(own_cpu_seconds(scheduler.pid) - cpu0, 2)
    figures.db_transactions_per_instance = round((await _transactions(pool) - tx0) / n, 1)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT count(*) FROM instances WHERE status <> 'terminated'")
        row = await cur.fetchone()
    figures.not_terminated = int(row[0])


def render(figures: MockFigures) -> str:
    n = figures.instances
    return "\n".join([
        f"mock cloud, {n} instances (a worker process each)",
        f"all ready: {figures.ready_s} s; all released: {figures.released_s} s",
        f"scheduler CPU: {figures.scheduler_cpu_s} s ({round(1000 * figures.scheduler_cpu_s / n, 1)} ms per instance)",
        f"database transactions per instance: {figures.db_transactions_per_instance}",
        f"not terminated: {figures.not_terminated}; worker processes left: {figures.workers_left}",
    ])  # fmt: skip
