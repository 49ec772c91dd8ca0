"""gateway.affinity against the real Redis, and against Redis URLs where nothing (useful) answers."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from multidict import CIMultiDict
from waiting import wait_until

from gateway import affinity
from gateway.affinity import Affinity, AffinityUnavailable, session_of
from inventiv.settings import Settings

TTL_S = 120


@pytest.fixture
def pins(redis: aioredis.Redis, settings: Settings) -> Affinity:
    return Affinity(redis, settings.replace(affinity_ttl_s=TTL_S))


ORG = "0b6f1f3e-6c1a-4c55-9d0e-000000000001"


def key(settings: Settings, model: str, session: str, org: str = ORG) -> str:
    return f"{settings.redis_prefix}affinity:{org}:{model}:{session}"


async def test_pin_then_lookup_returns_the_instance(pins: Affinity, redis: aioredis.Redis, settings: Settings) -> None:
    await pins.pin(ORG, "model-1", "conv-1", "instance-a")
    assert await redis.get(key(settings, "model-1", "conv-1")) == b"instance-a"
    assert 0 < await redis.ttl(key(settings, "model-1", "conv-1")) <= TTL_S
    assert await pins.lookup(ORG, "model-1", "conv-1") == "instance-a"


async def test_lookup_slides_the_ttl(pins: Affinity, redis: aioredis.Redis, settings: Settings) -> None:
    await pins.pin(ORG, "model-1", "conv-1", "instance-a")
    name = key(settings, "model-1", "conv-1")
    await redis.expire(name, 5)
    # Another gateway process, which has not seen this session yet, asks Redis.
    other = Affinity(redis, settings.replace(affinity_ttl_s=TTL_S))
    assert await other.lookup(ORG, "model-1", "conv-1") == "instance-a"
    # Back to the full TTL: a conversation that keeps talking keeps its instance.
    assert await redis.ttl(name) > 5


async def test_a_recent_pin_is_answered_from_memory_then_from_redis_again(
    pins: Affinity, redis: aioredis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await pins.pin(ORG, "model-1", "conv-1", "instance-a")
    name = key(settings, "model-1", "conv-1")
    # Another process moved the session: within the local window this one still answers from memory...
    await redis.set(name, "instance-b")
    assert await pins.lookup(ORG, "model-1", "conv-1") == "instance-a"
    # ...and once the window has passed it reads Redis again.
    monkeypatch.setattr(affinity, "_LOCAL_S", 0.0)
    assert await pins.lookup(ORG, "model-1", "conv-1") == "instance-b"
    await redis.delete(name)
    assert await pins.lookup(ORG, "model-1", "conv-1") is None


async def test_unknown_session_is_none_and_creates_nothing(
    pins: Affinity, redis: aioredis.Redis, settings: Settings
) -> None:
    assert await pins.lookup(ORG, "model-1", "never-seen") is None
    assert await redis.exists(key(settings, "model-1", "never-seen")) == 0


async def test_pins_are_per_model_and_a_new_pin_replaces_the_old(pins: Affinity) -> None:
    await pins.pin(ORG, "model-1", "conv-1", "instance-a")
    await pins.pin(ORG, "model-2", "conv-1", "instance-b")
    assert await pins.lookup(ORG, "model-2", "conv-1") == "instance-b"
    # Failover rewrites the pin.
    await pins.pin(ORG, "model-1", "conv-1", "instance-c")
    assert await pins.lookup(ORG, "model-1", "conv-1") == "instance-c"
    assert await pins.lookup(ORG, "model-2", "conv-1") == "instance-b"


async def test_two_organizations_with_the_same_session_id_have_their_own_pins(
    pins: Affinity, redis: aioredis.Redis, settings: Settings
) -> None:
    other_org = "0b6f1f3e-6c1a-4c55-9d0e-000000000002"
    await pins.pin(ORG, "model-1", "conv-1", "instance-a")
    assert await pins.lookup(other_org, "model-1", "conv-1") is None
    await pins.pin(other_org, "model-1", "conv-1", "instance-b")
    assert await pins.lookup(ORG, "model-1", "conv-1") == "instance-a"
    assert await redis.get(key(settings, "model-1", "conv-1", org=other_org)) == b"instance-b"
    # Another process, asking Redis rather than its memory, sees the same two pins.
    fresh = Affinity(redis, settings)
    assert await fresh.lookup(ORG, "model-1", "conv-1") == "instance-a"
    assert await fresh.lookup(other_org, "model-1", "conv-1") == "instance-b"


async def test_pins_stay_inside_the_deployments_prefix(redis: aioredis.Redis, settings: Settings) -> None:
    other = settings.replace(redis_prefix=settings.redis_prefix + "other:")
    await Affinity(redis, settings).pin(ORG, "model-1", "conv-1", "instance-a")
    assert await Affinity(redis, other).lookup(ORG, "model-1", "conv-1") is None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Blackhole(asyncio.Protocol):
    """A Redis that accepts connections and reads commands but never answers."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = 0
        self.transports: list[asyncio.BaseTransport] = []

    def __call__(self) -> Blackhole:
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connections += 1
        self.transports.append(transport)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)


@pytest.fixture
async def blackhole() -> AsyncIterator[tuple[Blackhole, int]]:
    hole = Blackhole()
    server = await asyncio.get_running_loop().create_server(hole, "127.0.0.1", 0)
    yield hole, server.sockets[0].getsockname()[1]
    server.close()
    for transport in hole.transports:
        transport.close()
    await server.wait_closed()


@pytest.fixture
async def client_for() -> AsyncIterator[list[aioredis.Redis]]:
    made: list[aioredis.Redis] = []
    yield made
    for client in made:
        await client.aclose()


def unreachable(clients: list[aioredis.Redis], port: int, settings: Settings) -> Affinity:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
    clients.append(client)
    return Affinity(client, settings)


async def test_nothing_listening_is_unavailable_then_redis_is_skipped(
    client_for: list[aioredis.Redis], settings: Settings
) -> None:
    pins = unreachable(client_for, free_port(), settings)
    with pytest.raises(AffinityUnavailable):
        await pins.lookup(ORG, "model-1", "conv-1")
    assert not pins.available
    with pytest.raises(AffinityUnavailable, match="circuit open"):
        await pins.lookup(ORG, "model-1", "conv-1")
    with pytest.raises(AffinityUnavailable, match="circuit open"):
        await pins.pin(ORG, "model-1", "conv-1", "instance-a")
    # The skipped commands were closed, not left to warn that they were never awaited.
    gc.collect()


async def test_a_redis_that_hangs_is_cut_short_and_then_not_asked_again(
    client_for: list[aioredis.Redis], settings: Settings, blackhole: tuple[Blackhole, int]
) -> None:
    hole, port = blackhole
    pins = unreachable(client_for, port, settings)
    with pytest.raises(AffinityUnavailable):
        await pins.lookup(ORG, "model-1", "conv-1")
    asked = (hole.connections, hole.received)
    assert asked[1] > 0
    for _ in range(3):
        with pytest.raises(AffinityUnavailable, match="circuit open"):
            await pins.lookup(ORG, "model-1", "conv-1")
    with pytest.raises(AffinityUnavailable, match="circuit open"):
        await pins.pin(ORG, "model-1", "conv-1", "instance-a")
    # The pin still holds within this process while Redis is away.
    assert await pins.lookup(ORG, "model-1", "conv-1") == "instance-a"
    # While the breaker is open no command leaves the gateway: nothing to wait for.
    assert (hole.connections, hole.received) == asked
    gc.collect()


async def test_the_breaker_lets_redis_be_tried_again(
    client_for: list[aioredis.Redis], settings: Settings, blackhole: tuple[Blackhole, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(affinity, "_BREAKER_S", 0.05)
    hole, port = blackhole
    pins = unreachable(client_for, port, settings)
    with pytest.raises(AffinityUnavailable):
        await pins.lookup(ORG, "model-1", "conv-1")
    received = hole.received
    await wait_until(lambda: pins.available, timeout_s=5, interval_s=0.01, what="the breaker to close")
    with pytest.raises(AffinityUnavailable):
        await pins.lookup(ORG, "model-1", "conv-1")
    assert hole.received > received


@pytest.mark.parametrize(
    ("headers", "session"),
    [
        ({"X-Inventiv-Session": "conv-1"}, "conv-1"),
        ({"X-Session-Id": "conv-2"}, "conv-2"),
        ({"x-inventiv-session": "conv-3"}, "conv-3"),
        ({"X-Inventiv-Session": "conv-1", "X-Session-Id": "conv-2"}, "conv-1"),
        ({"X-Inventiv-Session": "", "X-Session-Id": "conv-2"}, "conv-2"),
        ({"Authorization": "Bearer k"}, None),
        ({}, None),
    ],
    ids=["inventiv-header", "session-id-header", "lower-case", "inventiv-wins", "empty-falls-back", "other", "none"],
)
def test_session_of(headers: dict[str, str], session: str | None) -> None:
    assert session_of(CIMultiDict(headers)) == session
