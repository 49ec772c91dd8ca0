"""Test helpers that put fleet rows in the database the way the scheduler would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiopg
from aiohttp.test_utils import TestClient, TestServer
from waiting import wait_until

from gateway import state
from sql.api_key_store import create_api_key

SMALL = "Qwen/Qwen2.5-0.5B-Instruct"

WorkerFactory = Callable[..., Awaitable[TestServer]]
# One mock worker, its ready instance, a gateway and an inference key: (worker, client, key, instance id).
ServeOne = Callable[..., Awaitable[tuple[TestServer, TestClient, str, str]]]


async def insert_ready_instance(
    pool: aiopg.Pool,
    model: str,
    host: str,
    port: int,
    *,
    queue_depth: int = 0,
    heartbeat_age_s: float = 0.0,
    served_model: str | None = None,
    status: str = "ready",
    worker_status: str = "ready",
    organization: str | None = None,
) -> str:
    """A `ready` instance of the mock provider serving `model` (hf_repo_id) at host:port; returns its id.
    `organization`: the slug of the organization that deployed it; None: the operator's own."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            """
            INSERT INTO instances (provider_id, zone_id, instance_type_id, model_id, organization_id, status,
                                   ip_address, worker_port, worker_status, worker_model_id, worker_queue_depth,
                                   worker_last_heartbeat_at, ready_at)
            SELECT p.id, z.id, t.id, m.id, (SELECT id FROM organizations WHERE slug = %(org)s), %(status)s,
                   %(host)s, %(port)s, %(worker_status)s, %(served)s,
                   %(depth)s, now() - make_interval(secs => %(age)s), now()
            FROM providers p
            JOIN zones z ON z.provider_id = p.id AND z.code = 'local-1'
            JOIN instance_types t ON t.provider_id = p.id AND t.code = 'MOCK-GPU-S'
            JOIN models m ON m.hf_repo_id = %(model)s
            WHERE p.code = 'mock'
            RETURNING id
            """,
            {
                "status": status,
                "host": host,
                "port": port,
                "worker_status": worker_status,
                "served": served_model,
                "depth": queue_depth,
                "age": heartbeat_age_s,
                "model": model,
                "org": organization,
            },
        )
        row = await cur.fetchone()
    assert row is not None, f"no model {model!r} in the seeded catalog"
    return str(row[0])


async def set_instance(pool: aiopg.Pool, instance_id: str, **fields: Any) -> None:
    """Update columns of an instance (test setup only: column names come from the test itself)."""
    assignments = ", ".join(f"{name} = %({name})s" for name in fields)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(f"UPDATE instances SET {assignments} WHERE id = %(id)s", {**fields, "id": instance_id})


async def new_key(pool: aiopg.Pool, org_slug: str = "demo", scopes: tuple[str, ...] = ("inference",)) -> str:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT id FROM organizations WHERE slug = %s", (org_slug,))
        row = await cur.fetchone()
        if row is None:
            await cur.execute(
                "INSERT INTO organizations (slug, name) VALUES (%s, %s) RETURNING id", (org_slug, org_slug)
            )
            row = await cur.fetchone()
        created = await create_api_key(conn, str(row[0]), f"test key {org_slug}", list(scopes))
    return created.key


async def refresh(client: TestClient) -> None:
    """Reload the gateway's routing tables now instead of at the next second."""
    app = client.server.app
    assert app is not None
    await app[state.PLANE].reload(app[state.DB])


async def usage_rows(pool: aiopg.Pool, columns: str, expected: int, timeout_s: float = 15.0) -> list[tuple[Any, ...]]:
    """The `columns` of every finops.inference_usage row, oldest first, once at least `expected` are
    written (the usage writer records them in the background)."""

    async def written() -> list[tuple[Any, ...]]:
        async with pool.acquire() as conn, conn.cursor() as cur:
            # Final records only: a stream's opened one (status incomplete) is there while it runs.
            await cur.execute(
                f"SELECT {columns} FROM finops.inference_usage WHERE status <> 'incomplete' ORDER BY created_at"
            )
            rows = list(await cur.fetchall())
        assert len(rows) >= expected, f"got {rows}"
        return rows

    return await wait_until(written, timeout_s=timeout_s, what=f"{expected} usage rows")


async def point_provider_types_at(pool: aiopg.Pool, provider_code: str, port: int) -> None:
    """Every instance type of the provider serves its worker on `port`: health checks of a stand-in
    cloud's servers reach an in-process worker there."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE instance_types SET worker_port = %s WHERE provider_id = (SELECT id FROM providers WHERE code = %s)",
            (port, provider_code),
        )
