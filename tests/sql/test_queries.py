"""Every named query parses and plans against the real schema (EXPLAIN runs nothing)."""

import re

import aiopg
import pytest

from sql.queries import queries

_PARAM = re.compile(r"%\((\w+)\)s")
_ALL = sorted(queries.available_queries)


def test_queries_are_loaded() -> None:
    assert "api_keys.list_active_api_keys" in _ALL


@pytest.mark.parametrize("name", _ALL)
async def test_query_plans_against_the_schema(db_pool: aiopg.Pool, name: str) -> None:
    fn = queries
    for part in name.split("."):
        fn = getattr(fn, part)
    if fn.operation.name == "SCRIPT":
        pytest.skip("scripts run whole, not as one statement")
    params = {p: None for p in _PARAM.findall(fn.sql)}
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("EXPLAIN " + fn.sql, params)
        assert await cur.fetchall()
