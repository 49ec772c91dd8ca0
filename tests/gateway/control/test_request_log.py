"""gateway.control.request_log: the control API's answers when Postgres goes away, and its access lines."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiopg
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from tcp_proxy import TcpProxy, via_proxy

from gateway.app import create_app
from inventiv.settings import Settings
from sql.api_key_store import create_api_key

UUID = "00000000-0000-4000-8000-000000000000"
ROUTES = [("GET", "/instances"), ("GET", f"/instances/{UUID}"), ("GET", "/usage"), ("GET", "/api_keys"),
          ("GET", "/models"), ("GET", "/action_logs"), ("POST", "/api_keys")]  # fmt: skip


@pytest.fixture
async def postgres_proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy.to_postgres(database_url).start()
    yield proxy
    await proxy.close()


def through(database_url: str, proxy: TcpProxy) -> str:
    return via_proxy(database_url, proxy.port)


async def admin_key(db_pool: aiopg.Pool) -> str:
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT id FROM organizations WHERE slug = 'demo'")
        (org_id,) = await cur.fetchone()
        return (await create_api_key(conn, str(org_id), "admin", ["admin"])).key


async def test_postgres_gone_is_an_openai_shaped_503_on_every_route(
    aiohttp_client: AiohttpClient, settings: Settings, db_pool: aiopg.Pool, database_url: str,
    postgres_proxy: TcpProxy, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    key = await admin_key(db_pool)
    app = create_app(settings.replace(database_url=through(database_url, postgres_proxy)))
    client: TestClient = await aiohttp_client(app)
    headers = {"Authorization": f"Bearer {key}", "X-Request-Id": "req-1"}
    async with client.get("/instances", headers=headers) as resp:
        assert resp.status == 200
    postgres_proxy.cut()
    caplog.set_level(logging.INFO)
    for method, path in ROUTES:
        async with client.request(method, path, headers=headers, json={"name": "k", "scopes": ["inference"]}) as resp:
            assert resp.status == 503, (method, path, await resp.text())
            assert resp.content_type == "application/json"
            assert resp.headers["X-Request-Id"] == "req-1"
            error = (await resp.json())["error"]
        assert error["code"] == "database_unavailable" and error["type"] == "service_unavailable"
        assert "database" in error["message"]
    # One warning line per request, without a traceback.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    # Back once Postgres is.
    postgres_proxy.restore()
    async with client.get("/instances", headers=headers) as resp:
        assert resp.status == 200
