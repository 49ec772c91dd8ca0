"""Fixtures for the console: the real gateway app, a console user of the demo organization, and a client
that signs in through the form as a browser does (its cookie jar keeps the session)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from console_pages import EMAIL, PASSWORD, csrf_of
from pytest_aiohttp import AiohttpClient

from gateway.app import create_app
from gateway.console.users import create_user
from inventiv.settings import Settings
from sql.pool import transaction

Client = TestClient[web.Request, web.Application]


@dataclass
class Console:
    client: Client
    pool: aiopg.Pool
    settings: Settings
    org_id: str
    other_org_id: str

    async def sign_in(self, email: str = EMAIL, password: str = PASSWORD, expect: int = 303) -> str:
        """Sign in through the form; the session's CSRF token (from the next page) when it worked."""
        async with self.client.get("/console/sign-in") as resp:
            token = csrf_of(await resp.text())
        async with self.client.post("/console/sign-in", data={"csrf_token": token, "email": email,
                                                              "password": password}, allow_redirects=False) as resp:
            assert resp.status == expect, await resp.text()
        if expect != 303:
            return ""
        async with self.client.get("/console/fleet") as resp:
            assert resp.status == 200
            return csrf_of(await resp.text())

    async def page(self, path: str, expect: int = 200, **kwargs: Any) -> str:
        async with self.client.get(path, **kwargs) as resp:
            text = await resp.text()
            assert resp.status == expect, (resp.status, text)
            return text

    async def post(self, path: str, data: dict[str, Any], expect: int = 303, **kwargs: Any) -> tuple[str, str]:
        """The response's text and Location."""
        async with self.client.post(path, data=data, allow_redirects=False, **kwargs) as resp:
            text = await resp.text()
            assert resp.status == expect, (resp.status, text)
            return text, resp.headers.get("Location", "")

    async def sql(self, statement: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(statement, params or {})
            return list(await cur.fetchall()) if cur.description else []


@pytest.fixture
async def console(aiohttp_client: AiohttpClient, settings: Settings, db_pool: aiopg.Pool) -> Console:
    async with transaction(db_pool) as conn, conn.cursor() as cur:
        await cur.execute("SELECT id FROM organizations WHERE slug = 'demo'")
        (org_id,) = await cur.fetchone()
        await cur.execute("INSERT INTO organizations (slug, name) VALUES ('other', 'Other org') RETURNING id")
        (other_id,) = await cur.fetchone()
        await create_user(conn, org_id, EMAIL, PASSWORD)
    client = await aiohttp_client(create_app(settings))
    return Console(client=client, pool=db_pool, settings=settings, org_id=str(org_id), other_org_id=str(other_id))
