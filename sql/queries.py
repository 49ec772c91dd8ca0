"""The named queries in sql/queries/<table>/*.sql, loaded once with aiosql through the aiopg adapter.

Use: `from sql.queries import queries` then `await queries.instances.get_instance_status(conn, instance_id=...)`.
Select-many queries are async generators; `fetch_all` collects one into a list. `queries` is untyped, so
tests/sql/test_query_calls.py checks every call's query name and parameters against these files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosql

from sql.adapter import AiopgAdapter

QUERIES_DIR = Path(__file__).parent / "queries"

# aiosql's protocol types do not model async generators; the adapter matches what it calls at run time.
queries: Any = aiosql.from_path(QUERIES_DIR, AiopgAdapter, kwargs_only=True)  # type: ignore[arg-type]


async def fetch_all(rows: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row async for row in rows]
