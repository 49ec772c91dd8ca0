"""Fixtures for the data plane: real mock workers on local ports, the gateway app, an inference key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner
from fleet import SMALL, ServeOne, WorkerFactory, insert_ready_instance, new_key, set_instance

from gateway import state
from gateway.app import create_app
from gateway.runner import GatewayRunner
from inventiv.settings import Settings
from inventiv.worker_secrets import worker_secrets
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


class GatewayTestServer(TestServer):
    """The gateway app served as `gateway.server.run_app` serves it: its runner, head timeout and direct
    inference routes (the application alone answers the same; these tests take production's way in)."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        settings = self.app[state.SETTINGS]
        return GatewayRunner(self.app, head_timeout_s=settings.header_timeout_s, **kwargs)


@pytest.fixture
def start_gateway(
    aiohttp_client: Any, db_pool: aiopg.Pool, gateway_settings: Settings
) -> Callable[..., Awaitable[TestClient]]:
    async def start(**changes: Any) -> TestClient:
        app = create_app(gateway_settings.replace(**changes))
        return await aiohttp_client(GatewayTestServer(app))

    return start


@pytest.fixture
def serve_one(
    start_worker: WorkerFactory, start_gateway: Callable[..., Awaitable[TestClient]], db_pool: aiopg.Pool,
    gateway_settings: Settings,
) -> ServeOne:  # fmt: skip
    """A mock worker started with `config` and its instance's secret as API key (as the mock cloud starts
    them: it refuses anyone without it), its ready instance, an inference key, then the gateway."""

    async def serve(**config: Any) -> tuple[TestServer, TestClient, str, str]:
        # The instance first: its id names the secret the worker must be started with.
        model = config.get("model", SMALL)
        instance = await insert_ready_instance(db_pool, model, "127.0.0.1", 1, organization="demo")
        config.setdefault("api_key", worker_secrets(gateway_settings).for_instance(instance))
        worker = await start_worker(**config)
        await set_instance(db_pool, instance, worker_port=worker.port)
        key = await new_key(db_pool)
        return worker, await start_gateway(), key, instance

    return serve
