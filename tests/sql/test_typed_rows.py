"""The typed twins of the most-read rows have exactly the columns their query returns.

A dataclass built from a row reads each of its fields as a column: a column renamed or dropped fails at
run time, and one added for a field nobody declared is silently never read. Each query is run in a
transaction rolled back at once, with every parameter NULL, to read the names of what it returns.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import aiopg
import pytest

from scheduler.health import ProbeTarget
from scheduler.volume_check import TrackedRecord
from scheduler.work import InstanceWork
from sql.queries import queries

# (query, its typed row, columns read outside the dataclass and why)
TYPED_ROWS: list[tuple[Any, type, frozenset[str]]] = [
    (queries.instances.get_instance_for_scheduler, InstanceWork, frozenset()),
    (queries.instances.list_instances_to_probe, ProbeTarget, frozenset()),
    # instance_id groups the rows by instance (scheduler/reconcile.py).
    (queries.instance_volumes.list_tracked_volumes_of_instances, TrackedRecord, frozenset({"instance_id"})),
]


async def _columns(pool: aiopg.Pool, query: Any) -> list[str]:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("BEGIN")
        try:
            await cur.execute(query.sql, dict.fromkeys(query.parameters or ()))
            assert cur.description is not None, f"{query.__name__} returns no rows"
            return [column.name for column in cur.description]
        finally:
            await cur.execute("ROLLBACK")


@pytest.mark.parametrize(("query", "row_type", "outside"), TYPED_ROWS, ids=lambda v: getattr(v, "__name__", ""))
async def test_a_typed_row_has_its_querys_columns(
    db_pool: aiopg.Pool, query: Any, row_type: type, outside: frozenset[str]
) -> None:
    columns = await _columns(db_pool, query)
    assert len(columns) == len(set(columns)), f"{query.__name__} returns a column twice"
    declared = {f.name for f in fields(row_type)}
    returned = set(columns) - outside
    assert (sorted(returned - declared), sorted(declared - returned)) == ([], []), "(not declared, not returned)"
