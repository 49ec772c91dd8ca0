"""Fixtures for the control API: the real gateway app on the test database and Redis, keys, catalog ids.

`api` bundles what most tests need: an aiohttp test client, the demo organization's admin and
inference keys, a second organization's admin key, the demo catalog's ids, and helpers that write rows
the way the scheduler would (instances, volumes, usage).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiopg
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from gateway.app import create_app
from inventiv import redis_keys
from inventiv.settings import Settings
from sql.api_key_store import create_api_key
from sql.pool import transaction

Client = TestClient[web.Request, web.Application]


@dataclass
class Api:
    client: Client
    pool: aiopg.Pool
    redis: aioredis.Redis
    settings: Settings
    org_id: str
    admin_key: str
    admin_key_id: str
    inference_key: str
    other_org_id: str
    other_admin_key: str
    ids: dict[str, str]

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin_key}"}

    async def call(self, method: str, path: str, *, key: str | None = None, expect: int | None = None,
                   **kwargs: Any) -> tuple[int, Any]:
        headers = {**self.auth(key), **kwargs.pop("headers", {})}
        async with self.client.request(method, path, headers=headers, **kwargs) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            if expect is not None:
                assert resp.status == expect, (resp.status, body)
            return resp.status, body

    async def get(self, path: str, **kwargs: Any) -> Any:
        return (await self.call("GET", path, expect=kwargs.pop("expect", 200), **kwargs))[1]

    def deployment(self, **overrides: Any) -> dict[str, Any]:
        body = {"instance_type_id": self.ids["MOCK-GPU-S"], "zone_id": self.ids["local-1"],
                "model_id": self.ids["Qwen/Qwen2.5-0.5B-Instruct"]}
        return {**body, **overrides}

    async def commands(self) -> list[dict[str, str]]:
        """The scheduler's command stream, as the scheduler would read it."""
        entries = await self.redis.xrange(redis_keys.key(self.settings, redis_keys.SCHEDULER_COMMANDS))
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]

    async def sql(self, statement: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(statement, params or {})
            return list(await cur.fetchall()) if cur.description else []

    async def insert_instance(self, *, org: str | None = "mine", status: str = "ready", **values: Any) -> str:
        """An instance row as the scheduler leaves it (org: 'mine', 'other' or None)."""
        org_id = {"mine": self.org_id, "other": self.other_org_id, None: None}[org]
        row = {
            "provider_id": self.ids["mock"], "zone_id": self.ids["local-1"],
            "instance_type_id": self.ids["MOCK-GPU-S"], "model_id": self.ids["Qwen/Qwen2.5-0.5B-Instruct"],
            "organization_id": org_id, "status": status, "worker_port": 8000, **values,
        }
        columns = ", ".join(row)
        placeholders = ", ".join(f"%({c})s" for c in row)
        rows = await self.sql(f"INSERT INTO instances ({columns}) VALUES ({placeholders}) RETURNING id", row)
        return str(rows[0][0])

    async def insert_volume(self, instance_id: str, provider_volume_id: str, size_bytes: int | None, *,
                            is_boot: bool = False, deleted: bool = False, volume_type: str = "sbs_volume") -> None:
        await self.sql(
            "INSERT INTO instance_volumes (instance_id, provider_volume_id, volume_type, size_bytes, slot, is_boot,"
            " delete_on_terminate, attached_at, deleted_at) VALUES (%(i)s, %(v)s, %(t)s, %(s)s, %(slot)s, %(b)s,"
            " %(b)s, now(), CASE WHEN %(d)s THEN now() END)",
            {"i": instance_id, "v": provider_volume_id, "t": volume_type, "s": size_bytes,
             "slot": "0" if is_boot else "1", "b": is_boot, "d": deleted},
        )

    async def insert_usage(self, *, created_at: datetime, model: str = "qwen-small", org: str = "mine",
                           instance_id: str | None = None, prompt: int = 10, completion: int = 5,
                           status: str = "success") -> None:
        await self.sql(
            "INSERT INTO finops.inference_usage (request_id, created_at, organization_id, instance_id, model,"
            " route, stream, status, prompt_tokens, completion_tokens, total_tokens) VALUES (%(r)s, %(c)s, %(o)s,"
            " %(i)s, %(m)s, '/v1/chat/completions', false, %(st)s, %(p)s, %(co)s, %(t)s)",
            {"r": uuid.uuid4().hex, "c": created_at, "o": self.org_id if org == "mine" else self.other_org_id,
             "i": instance_id, "m": model, "st": status, "p": prompt, "co": completion, "t": prompt + completion},
        )


async def _catalog_ids(pool: aiopg.Pool) -> dict[str, str]:
    ids: dict[str, str] = {}
    async with pool.acquire() as conn, conn.cursor() as cur:
        for statement in ("SELECT code, id FROM providers", "SELECT code, id FROM zones",
                          "SELECT code, id FROM instance_types", "SELECT hf_repo_id, id FROM models"):
            await cur.execute(statement)
            ids.update({str(code): str(id_) for code, id_ in await cur.fetchall()})
    return ids


@pytest.fixture
async def api(aiohttp_client: AiohttpClient, settings: Settings, db_pool: aiopg.Pool,
              redis: aioredis.Redis) -> Api:
    async with transaction(db_pool) as conn, conn.cursor() as cur:
        await cur.execute("SELECT id FROM organizations WHERE slug = 'demo'")
        (org_id,) = await cur.fetchone()
        await cur.execute("INSERT INTO organizations (slug, name) VALUES ('other', 'Other org') RETURNING id")
        (other_id,) = await cur.fetchone()
        admin = await create_api_key(conn, org_id, "test admin", ["admin", "inference"])
        inference = await create_api_key(conn, org_id, "test inference", ["inference"])
        other = await create_api_key(conn, other_id, "other admin", ["admin"])
    client = await aiohttp_client(create_app(settings))
    return Api(
        client=client, pool=db_pool, redis=redis, settings=settings, org_id=str(org_id), admin_key=admin.key,
        admin_key_id=str(admin.row["id"]), inference_key=inference.key, other_org_id=str(other_id),
        other_admin_key=other.key, ids=await _catalog_ids(db_pool),
    )

