"""Prepared queries (sql/prepared.py) against the real Postgres: prepared once per connection, prepared
again where the connection lost the statement, and run as plain SQL where statements never last."""

from __future__ import annotations

import logging
from typing import Any

import aiopg
import aiosql
import psycopg2.errors
import pytest

from sql.adapter import AiopgAdapter
from sql.prepared import PreparedQuery

_SQL = """
-- name: doubled(n, label)$
select format('%%s: %%s %%%%', :label::text, :n::int * 2);
"""

scratch = aiosql.from_str(_SQL, AiopgAdapter, kwargs_only=True)  # type: ignore[arg-type]


async def _statement(conn: aiopg.Connection, name: str) -> tuple[int, int] | None:
    """(generic plans, custom plans) of the statement `name` on this connection; None: not prepared."""
    async with conn.cursor() as cur:
        await cur.execute("select generic_plans, custom_plans from pg_prepared_statements where name = %s", (name,))
        row = await cur.fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


async def test_a_query_is_prepared_once_per_connection_and_answers_as_the_plain_query(db_pool: aiopg.Pool) -> None:
    query = PreparedQuery("doubled", scratch.doubled)
    async with db_pool.acquire() as conn:
        plain = await scratch.doubled(conn, n=21, label="answer")
        assert plain == "answer: 42 %"
        for n in range(7):
            assert await query.value(conn, n=n, label="x") == f"x: {n * 2} %"
        plans = await _statement(conn, query.name)
        # Seven executions of one statement, prepared once: Postgres counts every plan it made for it
        # (custom ones first, a generic one kept from the sixth on).
        assert plans is not None and sum(plans) == 7 and plans[0] >= 1
    assert not query.plain


async def test_a_statement_the_connection_lost_is_prepared_again(db_pool: aiopg.Pool) -> None:
    query = PreparedQuery("doubled", scratch.doubled)
    async with db_pool.acquire() as conn:
        assert await query.value(conn, n=1, label="before") == "before: 2 %"
        async with conn.cursor() as cur:
            await cur.execute("DEALLOCATE ALL")
        assert await _statement(conn, query.name) is None
        assert await query.value(conn, n=2, label="after") == "after: 4 %"
        assert await _statement(conn, query.name) is not None
    assert not query.plain


async def test_another_text_of_a_query_is_another_statement(db_pool: aiopg.Pool) -> None:
    other = aiosql.from_str(_SQL.replace("* 2", "* 3"), AiopgAdapter, kwargs_only=True)  # type: ignore[arg-type]
    first = PreparedQuery("doubled", scratch.doubled)
    second = PreparedQuery("doubled", other.doubled)
    assert first.name != second.name
    async with db_pool.acquire() as conn:
        assert await first.value(conn, n=5, label="a") == "a: 10 %"
        assert await second.value(conn, n=5, label="a") == "a: 15 %"


class _ForgetfulCursor:
    """What a pooler in transaction mode looks like from the client: every statement may land on another
    server connection, so a statement prepared by one never exists for the next."""

    def __init__(self, log: list[str]) -> None:
        self._log = log
        self._transaction = None
        self.rowcount = -1

    async def execute(self, sql: str, parameters: Any = None) -> None:
        self._log.append(sql.split(" ", 1)[0])
        if sql.startswith("EXECUTE"):
            raise psycopg2.errors.InvalidSqlStatementName("prepared statement does not exist")

    async def fetchone(self) -> tuple[str]:
        return ("plain",)

    def close(self) -> None:
        pass


class _ForgetfulConnection:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def cursor(self, **kwargs: Any) -> _ForgetfulCursor:
        return _ForgetfulCursor(self.sent)


async def test_statements_that_never_last_fall_back_to_plain_sql_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    query = PreparedQuery("doubled", scratch.doubled)
    conn = _ForgetfulConnection()
    with caplog.at_level(logging.WARNING, logger="sql.prepared"):
        assert await query.value(conn, n=1, label="a") == "plain"  # type: ignore[arg-type]
        assert await query.value(conn, n=2, label="b") == "plain"  # type: ignore[arg-type]
    # Prepared, lost, prepared again, lost again: plain from then on, without trying again.
    assert conn.sent == ["PREPARE", "EXECUTE", "PREPARE", "EXECUTE", "select", "select"]
    assert query.plain
    assert [r.getMessage() for r in caplog.records].count(
        "prepared statements do not last on these connections (a pooler in transaction mode?); "
        "running the query as plain SQL"
    ) == 1
