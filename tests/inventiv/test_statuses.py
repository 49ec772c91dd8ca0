"""The status enums allow exactly what the migrated database's CHECK constraints allow."""

from __future__ import annotations

import re

import aiopg
import pytest

from inventiv.statuses import InstanceStatus, WorkerStatus

# The constraint's text as Postgres gives it back: CHECK ((status = ANY (ARRAY['provisioning'::text, ...])))
_VALUE = re.compile(r"'([^']*)'::text")


async def allowed_values(conn: aiopg.Connection, table: str, column: str) -> set[str]:
    """The values the CHECK constraint on `table.column` (and on that column alone) allows."""
    async with conn.cursor() as cur:
        await cur.execute(
            """
            SELECT pg_get_constraintdef(c.oid)
            FROM pg_constraint c
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND c.conkey = ARRAY[a.attnum]
            WHERE c.contype = 'c' AND c.conrelid = %s::regclass AND a.attname = %s
            """,
            (table, column),
        )
        definitions = [row[0] for row in await cur.fetchall()]
    assert len(definitions) == 1, f"{table}.{column} has {len(definitions)} CHECK constraints"
    return set(_VALUE.findall(definitions[0]))


@pytest.mark.parametrize(
    ("column", "enum"),
    [("status", InstanceStatus), ("worker_status", WorkerStatus)],
)
async def test_each_status_enum_is_what_the_database_allows(
    db_pool: aiopg.Pool, column: str, enum: type[InstanceStatus] | type[WorkerStatus]
) -> None:
    async with db_pool.acquire() as conn:
        allowed = await allowed_values(conn, "instances", column)
    assert allowed == {member.value for member in enum}


async def test_the_constraint_reader_sees_a_changed_constraint(db_pool: aiopg.Pool) -> None:
    # A status added in SQL only must make the comparison above fail: the reader must see it.
    async with db_pool.acquire() as conn:
        async with conn.cursor() as cur:
            await cur.execute("CREATE TEMP TABLE probe (status text CHECK (status IN ('a', 'b')))")
        try:
            assert await allowed_values(conn, "probe", "status") == {"a", "b"}
        finally:
            async with conn.cursor() as cur:
                await cur.execute("DROP TABLE probe")
