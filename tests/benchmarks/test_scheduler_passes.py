"""benchmarks/scheduler_passes.py at a small size, on the test database: what it counts is what ran."""

from __future__ import annotations

from typing import Any

import aiopg

from benchmarks.scheduler_passes import StatementCounter, query_name, query_names, render, run_passes
from inventiv.settings import Settings
from sql.queries import queries


async def test_a_small_fleet_reconciles_in_two_statements_and_one_listing(
    db_pool: aiopg.Pool, redis: Any, settings: Settings
) -> None:
    reconcile, sweep = await run_passes(settings, db_pool, redis, volumes=20, orphans=3)

    assert (reconcile.name, reconcile.result, reconcile.db_statements) == ("reconcile", 0, 2)
    assert reconcile.cloud_calls == {"list_servers": 1}
    assert sweep.result == 3, "the three untracked tagged volumes, and nothing of the ten instances"
    assert sweep.cloud_calls == {"list_servers": 1, "list_volumes": 1}
    assert reconcile.cpu_s >= reconcile.cloud_cpu_s >= 0
    assert render(20, [reconcile, sweep]).splitlines()[0] == "20 tracked volumes (10 instances)"


async def test_the_statement_counter_counts_executes_and_puts_aiopg_back(db_pool: aiopg.Pool) -> None:
    execute = aiopg.Cursor.execute
    with StatementCounter() as counter:
        async with db_pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT 1")
            await cur.execute("SELECT 2")
    assert counter.count == 2
    assert aiopg.Cursor.execute is execute


def test_statements_are_named_by_their_query() -> None:
    names = query_names()
    claim = queries.instances.claim_due_instances.sql
    assert query_name(claim, names) == "instances.claim_due_instances", "not its _cursor twin"
    assert query_name("BEGIN", names) == "BEGIN"
    assert query_name("SELECT count(*) FROM instances WHERE x", names) == "SELECT count(*) FROM"
