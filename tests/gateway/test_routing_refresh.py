"""The routing refresh refetches the key table and the catalog only when their version moved
(routing_versions, bumped by triggers: migration 0014); the worker view every time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiopg
import pytest
from aiohttp.test_utils import TestClient
from fleet import SMALL, new_key
from waiting import wait_until

from gateway import state
from gateway.auth import KeyTable
from gateway.plane import CATALOG, KEYS, stale

CHAT = "/v1/chat/completions"


@pytest.mark.parametrize(
    ("built", "current", "refetch"),
    [({}, {KEYS: 3}, True), ({KEYS: 3}, {KEYS: 3}, False), ({KEYS: 3}, {KEYS: 4}, True), ({KEYS: 3}, {}, True),
     ({KEYS: 3, CATALOG: 1}, {KEYS: 3, CATALOG: 2}, False)],
)  # fmt: skip
def test_a_group_is_refetched_when_its_version_moved_or_is_unknown(
    built: dict[str, int], current: dict[str, int], refetch: bool
) -> None:
    assert stale(built, current, KEYS) is refetch


async def _versions(pool: aiopg.Pool) -> dict[str, int]:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT name, version FROM routing_versions")
        return {name: version for name, version in await cur.fetchall()}


async def _run(pool: aiopg.Pool, sql: str) -> None:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(sql)


@pytest.mark.parametrize(
    ("sql", "moved"),
    [("UPDATE api_keys SET revoked_at = now()", {KEYS}),
     ("UPDATE api_keys SET requests_per_minute = 10", {KEYS}),
     ("UPDATE api_keys SET last_used_at = now()", set()),
     ("UPDATE organizations SET slug = slug || '-x'", {KEYS, CATALOG}),
     ("UPDATE organizations SET name = name || ' x'", set()),
     ("UPDATE models SET is_active = is_active", {CATALOG}),
     ("UPDATE offerings SET is_active = is_active", {CATALOG}),
     ("DELETE FROM offering_grants", {CATALOG})],
)  # fmt: skip
async def test_the_versions_move_with_what_the_routing_tables_read(
    db_pool: aiopg.Pool, sql: str, moved: set[str]
) -> None:
    await new_key(db_pool)
    before = await _versions(db_pool)
    await _run(db_pool, sql)
    after = await _versions(db_pool)
    assert {name for name in after if after[name] != before[name]} == moved


async def test_unchanged_keys_are_not_refetched_and_a_new_key_is(
    start_gateway: Callable[..., Awaitable[TestClient]], db_pool: aiopg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    replaced: list[int] = []
    original = KeyTable.replace

    def counting(table: KeyTable, rows: list[dict[str, Any]]) -> None:
        replaced.append(len(rows))
        original(table, rows)

    monkeypatch.setattr(KeyTable, "replace", counting)
    client = await start_gateway(routing_refresh_s=0.05)
    plane = client.server.app[state.PLANE]  # type: ignore[index]
    built = len(replaced)
    for _ in range(5):
        await plane.reload(client.server.app[state.DB])  # type: ignore[index]
    assert len(replaced) == built, "nothing changed: the key table was not rebuilt"

    key = await new_key(db_pool)  # straight into the database, no notification

    async def served() -> bool:
        body = {"model": SMALL, "messages": [{"role": "user", "content": "hi"}]}
        async with client.post(CHAT, json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
            return resp.status != 401

    await wait_until(served, timeout_s=5, what="the new key to be known")
    assert len(replaced) > built
