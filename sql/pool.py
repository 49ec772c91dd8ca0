"""The aiopg pool and the transaction helper every writer uses.

aiopg connections run in autocommit mode; `transaction()` wraps a block in BEGIN/COMMIT (ROLLBACK on
any exception) on one pooled connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiopg
import psycopg2
import psycopg2.extensions
import psycopg2.extras

# jsonb columns come back as Python objects; uuid columns as str (what the API serialises anyway).
psycopg2.extras.register_default_jsonb(globally=True, loads=__import__("orjson").loads)
psycopg2.extensions.register_type(
    psycopg2.extensions.new_type((2950,), "UUID_AS_STR", lambda value, cur: value), None
)
psycopg2.extensions.register_type(
    psycopg2.extensions.new_array_type((2951,), "UUID_ARRAY_AS_STR", psycopg2.STRING), None
)


class DatabaseUnavailable(ConnectionError):
    """Postgres cannot be reached; the message says where it was looked for."""


async def create_pool(dsn: str, *, minsize: int = 1, maxsize: int = 10, connect_timeout: float = 10.0) -> aiopg.Pool:
    try:
        # aiopg would otherwise register its own uuid, json and hstore casters on every connection,
        # overriding the global ones above (and hstore costs a query per new connection).
        return await aiopg.create_pool(
            dsn, minsize=minsize, maxsize=maxsize, timeout=connect_timeout,
            enable_uuid=False, enable_json=False, enable_hstore=False,
        )
    except psycopg2.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        raise DatabaseUnavailable(f"cannot connect to Postgres ({redact(dsn)}): {first}") from None


async def close_pool(pool: aiopg.Pool, timeout_s: float = 5.0) -> None:
    """Close the pool, waiting a bounded time for connections in use; then drop them.

    A query cancelled mid-flight (a task cancelled at shutdown) can leave its connection checked
    out for good, and `wait_closed()` alone would then wait forever.
    """
    pool.close()
    try:
        await asyncio.wait_for(pool.wait_closed(), timeout_s)
    except TimeoutError:
        pool.terminate()
        await pool.wait_closed()


@asynccontextmanager
async def transaction(pool: aiopg.Pool) -> AsyncIterator[aiopg.Connection]:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("BEGIN")
        try:
            yield conn
        except BaseException:
            await cur.execute("ROLLBACK")
            raise
        await cur.execute("COMMIT")


def redact(dsn: str) -> str:
    """The DSN without its password, for error messages and logs."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"
