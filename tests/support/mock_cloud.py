"""Open the mock cloud in a test and leave no worker process behind.

    async with open_mock_cloud(tmp_path / "cloud") as cloud:   # a MockCloud on that folder
        ...
    # on exit: the cloud's HTTP session is closed and every worker it ever started is stopped

A test whose code under test opens its own MockCloud (the scheduler, through `create_provider`) only
needs the teardown: `async with reaping_mock_cloud(settings.mock_cloud_path): ...`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_until

from providers.base import Server, ServerState
from providers.mock.cloud import MockCloud, stop_all_workers

# A worker is a fresh Python process importing aiohttp: well under 10 s even on a loaded 2-core machine.
START_TIMEOUT_S = 20.0
_POLL_S = 0.05


@asynccontextmanager
async def reaping_mock_cloud(state_dir: Path) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await asyncio.to_thread(stop_all_workers, state_dir)


@asynccontextmanager
async def open_mock_cloud(state_dir: Path, **options: Any) -> AsyncIterator[MockCloud]:
    async with reaping_mock_cloud(state_dir):
        cloud = MockCloud(state_dir, **options)
        try:
            yield cloud
        finally:
            await cloud.close()


async def wait_for_state(
    cloud: MockCloud, zone: str, server_id: str, state: ServerState, timeout_s: float = START_TIMEOUT_S
) -> Server:
    async def in_state() -> Server:
        server = await cloud.get_server(zone, server_id)
        if server is None:
            pytest.fail(f"server {server_id} vanished")
        assert server.state is state, f"still {server.state}"
        return server

    return await wait_until(in_state, timeout_s=timeout_s, interval_s=_POLL_S, what=f"server {server_id} to be {state}")
