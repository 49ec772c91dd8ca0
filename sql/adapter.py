"""The aiopg adapter for aiosql (aiosql ships adapters for asyncpg and psycopg 3, none for aiopg).

Queries keep aiosql's `:name` parameters; they are turned into psycopg2's `%(name)s` once, at load time.
Rows come back as dicts, which is what the API serialises and the scheduler reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiopg
from aiosql.adapters.pyformat import _replacer
from aiosql.utils import VAR_REF
from psycopg2.extras import RealDictCursor

Params = Mapping[str, Any] | tuple[Any, ...] | list[Any]


@asynccontextmanager
async def cursor(conn: aiopg.Connection, **kwargs: Any) -> AsyncIterator[aiopg.Cursor]:
    """`conn.cursor(**kwargs)`, closed and freed at the end of the block.

    An aiopg `Cursor` and its `Transaction` refer to each other (aiopg/connection.py), so a cursor is
    freed by the cyclic garbage collector only, and with it the psycopg2 cursor and the whole text of
    its last query (`cursor.query`, which psycopg2 keeps after close). The usage writer's INSERT of a
    batch is megabytes of JSON, and the gateway runs its collector rarely (gateway/server.py): under
    load such cursors held hundreds of MB for a minute at a time. Breaking the cycle lets reference
    counting free the cursor as the block ends.
    """
    cur = await conn.cursor(**kwargs)
    try:
        yield cur
    finally:
        cur.close()
        del cur._transaction


class AiopgAdapter:
    is_aio_driver = True

    def process_sql(self, query_name: str, op_type: Any, sql: str) -> str:
        return VAR_REF.sub(_replacer, sql)

    async def select(
        self, conn: aiopg.Connection, query_name: str, sql: str, parameters: Params, record_class: Any = None
    ) -> AsyncIterator[Any]:
        async with cursor(conn, cursor_factory=RealDictCursor) as cur:
            await cur.execute(sql, parameters)
            for row in await cur.fetchall():
                yield record_class(**row) if record_class is not None else dict(row)

    async def select_one(
        self, conn: aiopg.Connection, query_name: str, sql: str, parameters: Params, record_class: Any = None
    ) -> Any:
        async with cursor(conn, cursor_factory=RealDictCursor) as cur:
            await cur.execute(sql, parameters)
            row = await cur.fetchone()
        if row is None:
            return None
        return record_class(**row) if record_class is not None else dict(row)

    async def select_value(self, conn: aiopg.Connection, query_name: str, sql: str, parameters: Params) -> Any:
        async with cursor(conn) as cur:
            await cur.execute(sql, parameters)
            row = await cur.fetchone()
        return row[0] if row else None

    @asynccontextmanager
    async def select_cursor(
        self, conn: aiopg.Connection, query_name: str, sql: str, parameters: Params
    ) -> AsyncIterator[Any]:
        async with cursor(conn, cursor_factory=RealDictCursor) as cur:
            await cur.execute(sql, parameters)
            yield cur

    async def insert_returning(self, conn: aiopg.Connection, query_name: str, sql: str, parameters: Params) -> Any:
        return await self.select_one(conn, query_name, sql, parameters)

    async def insert_update_delete(
        self, conn: aiopg.Connection, query_name: str, sql: str, parameters: Params
    ) -> int:
        async with cursor(conn) as cur:
            await cur.execute(sql, parameters)
            return int(cur.rowcount)

    async def insert_update_delete_many(
        self, conn: aiopg.Connection, query_name: str, sql: str, parameters: list[Params]
    ) -> int:
        # aiopg has no executemany: one round trip per row, inside the caller's transaction.
        count = 0
        async with cursor(conn) as cur:
            for params in parameters:
                await cur.execute(sql, params)
                count += cur.rowcount
        return count

    async def execute_script(self, conn: aiopg.Connection, sql: str) -> str:
        async with cursor(conn) as cur:
            await cur.execute(sql)
            return str(cur.statusmessage)
