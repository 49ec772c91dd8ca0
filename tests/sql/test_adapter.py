"""The aiopg adapter's operations that none of the project's queries use yet: scripts (`#`), one statement
for many rows (`*!`) and a select's cursor. aiosql calls them for those query kinds, so they run here,
through aiosql, against the real Postgres."""

from __future__ import annotations

import gc
import weakref

import aiopg
import aiosql

from sql.adapter import AiopgAdapter, cursor

_SQL = """
-- name: create-scratch()#
create temporary table adapter_scratch (n int primary key, word text not null);

-- name: insert-words(n, word)*!
insert into adapter_scratch (n, word) values (:n, :word);

-- name: list-words(least)
select n, word from adapter_scratch where n >= :least order by n;
"""

scratch = aiosql.from_str(_SQL, AiopgAdapter, kwargs_only=True)  # type: ignore[arg-type]


async def test_a_script_runs_whole_and_a_many_statement_counts_every_row(db_pool: aiopg.Pool) -> None:
    async with db_pool.acquire() as conn:
        try:
            assert await scratch.create_scratch(conn) == "CREATE TABLE"
            rows = [{"n": 1, "word": "one"}, {"n": 2, "word": "two"}, {"n": 3, "word": "three"}]
            assert await scratch.insert_words(conn, rows) == 3
            async with scratch.list_words_cursor(conn, least=2) as cur:
                assert await cur.fetchall() == [{"n": 2, "word": "two"}, {"n": 3, "word": "three"}]
        finally:
            async with conn.cursor() as cur:
                await cur.execute("drop table if exists adapter_scratch")


async def test_a_cursor_is_freed_as_its_block_ends_with_the_text_of_its_query(db_pool: aiopg.Pool) -> None:
    """aiopg's cursor and its transaction refer to each other; psycopg2 keeps the last query's text (a
    usage batch is megabytes of it): reference counting alone must free them, not a later collection."""
    async with db_pool.acquire() as conn:
        gc.disable()
        try:
            async with cursor(conn) as cur:
                await cur.execute("select length(%s)", ("x" * 100_000,))
                assert (await cur.fetchone()) == (100_000,)
            assert cur.closed and len(cur._impl.query) > 100_000
            freed = weakref.ref(cur._impl)
            del cur
            assert freed() is None
        finally:
            gc.enable()
