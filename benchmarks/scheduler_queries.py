"""Database statements and cloud calls per instance, by named query and by route, for each phase.

    python -m benchmarks.scheduler --queries 200

N instances provisioned, then released, through the real Scaleway provider against the fake Scaleway API
(servers run at the first read after power-on, one in-process mock worker answers every health check),
by the scheduler's driver running in this process, so that every statement can be counted and named:
each aiopg execute is matched to its aiosql query (sql/queries/<table>/*.sql). The driver is driven in
a loop, as its interval job would be, without the job's pauses. Health probes and the interval jobs
(reconciliation, sweep) are left out: they are per pass over the fleet, not per instance, and
`--passes` times them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import aiopg
import redis.asyncio as aioredis

from benchmarks.scheduler_bench import per_instance_calls
from benchmarks.scheduler_passes import StatementCounter, query_name, query_names
from inventiv.settings import Settings
from scheduler.driver import Driver
from scheduler.runtime import ProviderSet, Runtime

# tests/support is on sys.path (benchmarks.scheduler_bench puts it there).
from fake_scaleway import FakeScaleway, run_fake_scaleway  # isort: skip
from memory_provider import serve_worker  # isort: skip
from scheduler_chaos import INSERT, MODEL, TERMINATE, TYPE, ZONE, prepare  # isort: skip

# A phase that has not finished by then has a bug worth reporting, not waiting for.
_PHASE_TIMEOUT_S = 600.0
_SECRET_KEY = "queries-benchmark-" + "k" * 32


@dataclass
class PhaseFigures:
    name: str
    wall_s: float = 0.0
    statements_per_instance: float = 0.0
    # named query (or first words) -> statements per instance
    queries: dict[str, float] = field(default_factory=dict)
    cloud_calls: dict[str, float] = field(default_factory=dict)


async def run_queries(
    settings: Settings, pool: aiopg.Pool, redis: aioredis.Redis, instances: int
) -> list[PhaseFigures]:
    async with run_fake_scaleway(polls_to_running=1, polls_to_gone=1) as fake, serve_worker(MODEL) as (_, port):
        await prepare(pool, port)
        settings = settings.replace(
            **fake.settings_changes(), worker_secret_key=_SECRET_KEY, scheduler_tick_s=0.01,
            scheduler_retry_base_s=0.01, scheduler_retry_max_s=0.05,
        )  # fmt: skip
        rt = Runtime(settings, pool, redis, ProviderSet(settings), aiohttp.ClientSession())
        driver = Driver(rt)
        try:
            ids = []
            async with pool.acquire() as conn, conn.cursor() as cur:
                for _ in range(instances):
                    await cur.execute(INSERT, {"model": MODEL, "zone": ZONE, "type": TYPE})
                    ids.append(str((await cur.fetchone())[0]))
            ready = "SELECT count(*) FROM instances WHERE status IN ('ready', 'failed')"
            provision = await _phase("provision", driver, pool, fake, ready, instances)
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute(TERMINATE, (ids,))
            released = "SELECT count(*) FROM instances WHERE deleted_at IS NOT NULL"
            release = await _phase("release", driver, pool, fake, released, instances)
            return [provision, release]
        finally:
            await driver.close()
            await rt.close()


async def _phase(name: str, driver: Driver, pool: aiopg.Pool, fake: FakeScaleway, done_sql: str,
                 n: int) -> PhaseFigures:  # fmt: skip
    figures = PhaseFigures(name)
    calls0, began = len(fake.requests), time.monotonic()
    with StatementCounter() as counter:
        while await _count(pool, done_sql) < n:
            if time.monotonic() - began > _PHASE_TIMEOUT_S:
                raise TimeoutError(f"{name}: not done after {_PHASE_TIMEOUT_S:.0f} s")
            await driver.run_due()
    figures.wall_s = round(time.monotonic() - began, 1)
    names = query_names()
    by_name: Counter[str] = Counter()
    for text, count in counter.texts.items():
        if text != done_sql:  # the loop's own check
            by_name[query_name(text, names)] += count
    figures.queries = {q: round(c / n, 2) for q, c in by_name.most_common()}
    figures.statements_per_instance = round(sum(by_name.values()) / n, 1)
    figures.cloud_calls = per_instance_calls(fake.requests[calls0:], n)
    return figures


async def _count(pool: aiopg.Pool, sql: str) -> int:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(sql)
        row = await cur.fetchone()
    return int(row[0])


def render(instances: int, phases: Sequence[PhaseFigures]) -> str:
    lines = [f"{instances} instances, fake Scaleway, driver in process"]
    for phase in phases:
        lines += ["", f"{phase.name}: {phase.wall_s} s, {phase.statements_per_instance} statements and "
                  f"{phase.cloud_calls.get('total', 0)} cloud calls per instance", "",
                  "| statements per instance | query |", "|---|---|"]  # fmt: skip
        lines += [f"| {n} | {q} |" for q, n in phase.queries.items()]
    return "\n".join(lines)
