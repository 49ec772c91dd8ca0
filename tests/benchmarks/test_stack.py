from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from benchmarks import static_upstream
from benchmarks.loadgen import Endpoint
from benchmarks.processes import Started
from benchmarks.scenarios import drain_usage
from benchmarks.services import BenchServices
from benchmarks.stack import MOCK, NGINX, STATIC, Stack, worker_specs
from inventiv import redis_keys
from inventiv.settings import Settings


def _started(pid: int) -> Started:
    return Started(f"process-{pid}", cast(Any, SimpleNamespace(pid=pid)), Path("/dev/null"))


def _endpoint(port: int) -> Endpoint:
    return Endpoint("127.0.0.1", port)


def _stack(services: BenchServices | None = None) -> Stack:
    specs = {s.role: s for s in worker_specs(20.0, 100.0)}
    workers = {"fast": _endpoint(1), STATIC: _endpoint(2)}
    peers = {
        "sglang-router": {"fast": (_started(31), _endpoint(31)), STATIC: (_started(32), _endpoint(32))},
        "vllm-router": {"fast": (_started(41), _endpoint(41)), STATIC: (_started(42), _endpoint(42))},
    }
    services = services or BenchServices("postgresql:///unused", "redis://unused", "unused:")
    return Stack(specs, workers, _started(10), _endpoint(10), _started(20), _endpoint(20), peers, "ik_x", Path("/"),
                 services)  # fmt: skip


def test_every_peer_is_a_target_of_each_role_it_runs_for() -> None:
    targets = _stack().targets(STATIC)
    assert [(t.name, t.pid, t.endpoint.port) for t in targets] == [
        ("direct", None, 2), ("gateway", 10, 10), ("sglang-router", 32, 32), ("vllm-router", 42, 42),
    ]  # fmt: skip
    assert {t.worker.port for t in targets} == {2}


def test_what_reached_nginx_is_counted_by_nginx() -> None:
    stack = _stack()
    assert {t.counted_by for t in stack.targets(STATIC)} == {NGINX}
    assert stack.logged_target(STATIC).counted_by == NGINX
    assert {t.counted_by for t in stack.targets("fast")} == {MOCK}
    assert stack.model(STATIC) == static_upstream.MODEL
    assert stack.model("fast") == stack.specs["fast"].model


async def test_the_usage_backlog_is_the_stream_s_length_and_b_waits_for_it_within_its_limit(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert settings.redis_url is not None
    stack = _stack(BenchServices("postgresql:///unused", settings.redis_url, settings.redis_prefix))
    assert await stack.usage_backlog() == 0
    client = aioredis.from_url(settings.redis_url)
    stream = settings.redis_prefix + redis_keys.USAGE_STREAM
    try:
        ids = [await client.xadd(stream, {"r": str(i)}) for i in range(3)]
        assert await stack.usage_backlog() == 3
        await drain_usage(stack, limit_s=0.6)
        assert "not yet in Postgres: 3; waited 1 s, 3 still waiting" in capsys.readouterr().err
        await client.xdel(stream, *ids)
        await drain_usage(stack, limit_s=0.6)
        assert "not yet in Postgres: 0; waited 0 s\n" in capsys.readouterr().err
    finally:
        await client.delete(stream)
        await client.aclose()
