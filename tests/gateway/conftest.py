"""Fixtures for the data plane: real mock workers on local ports, the gateway app, an inference key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from fleet import SMALL, WorkerFactory

from gateway.app import create_app
from inventiv.settings import Settings
from providers.mock.worker import WorkerConfig
from providers.mock.worker import create_app as create_worker_app


@pytest.fixture
def start_worker(aiohttp_server: Any) -> WorkerFactory:
    """Start a real mock worker on 127.0.0.1 (test servers cancel handlers on disconnect, as vLLM aborts)."""

    async def start(**config: Any) -> TestServer:
        config.setdefault("model", SMALL)
        app: web.Application = create_worker_app(WorkerConfig(**config))
        return await aiohttp_server(app)

    return start


@pytest.fixture
def gateway_settings(settings: Settings) -> Settings:
    # Short timeouts keep failure tests fast; the refresh interval is the production one.
    return settings.replace(upstream_connect_timeout_s=1.0, upstream_first_byte_timeout_s=5.0, drain_timeout_s=2.0)


@pytest.fixture
def start_gateway(
    aiohttp_client: Any, db_pool: aiopg.Pool, gateway_settings: Settings
) -> Callable[..., Awaitable[TestClient]]:
    async def start(**changes: Any) -> TestClient:
        app = create_app(gateway_settings.replace(**changes))
        return await aiohttp_client(app)

    return start
