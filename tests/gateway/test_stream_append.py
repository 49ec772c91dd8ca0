"""gateway.stream_append: the usage flusher's XADD on a connection of its own, held to real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.stream_append import StreamAppender
from inventiv import redis_keys
from inventiv.settings import Settings


@pytest.fixture
def stream(settings: Settings) -> str:
    return redis_keys.key(settings, redis_keys.USAGE_STREAM)


@pytest.fixture
async def appender(redis: aioredis.Redis, stream: str) -> AsyncIterator[StreamAppender]:
    appender = StreamAppender(redis, stream)
    yield appender
    await appender.close()


async def test_an_entry_lands_whole_and_its_id_is_returned(
    appender: StreamAppender, redis: aioredis.Redis, stream: str
) -> None:
    value = b'{"request_id":"r-1"}\n' * 2_000 + bytes(range(256))
    first = await appender.xadd(b"rs", value)
    second = await appender.xadd(b"rs", b"x")
    assert [(i, f) for i, f in await redis.xrange(stream)] == [(first, {b"rs": value}), (second, {b"rs": b"x"})]


async def test_an_error_reply_raises_and_the_connection_serves_on(
    appender: StreamAppender, redis: aioredis.Redis, stream: str
) -> None:
    await redis.set(stream, "not a stream")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await appender.xadd(b"rs", b"x")
    connection = appender._connection
    await redis.delete(stream)
    await appender.xadd(b"rs", b"y")
    assert appender._connection is connection


async def test_a_connection_closed_by_redis_is_replaced_on_the_next_call(
    appender: StreamAppender, redis: aioredis.Redis, stream: str
) -> None:
    """Redis dropping an idle connection (a restart, its timeout) costs no flush: one more try on a new one."""
    client_id = await appender.call(b"CLIENT", b"ID")
    assert await redis.client_kill_filter(_id=client_id) == 1
    await appender.xadd(b"rs", b"after")
    assert await appender.call(b"CLIENT", b"ID") != client_id
    assert [f for _, f in await redis.xrange(stream)] == [{b"rs": b"after"}]


async def test_unreachable_redis_is_a_redis_error() -> None:
    down = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    appender = StreamAppender(down, "s")
    with pytest.raises(RedisConnectionError):
        await appender.xadd(b"rs", b"x")
    assert appender._connection is None
    await down.aclose()


async def test_a_redis_that_never_answers_times_out_and_the_connection_is_dropped() -> None:
    """Accepts, takes the handshake's commands, then never answers: the call fails within its timeout."""
    held: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # No handshake command: redis-py connects without sending any (no password, db 0, RESP2).
    mute_redis = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
    appender = StreamAppender(mute_redis, "s", timeout_s=0.3)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(RedisTimeoutError):
        await appender.xadd(b"rs", b"x")
    assert loop.time() - began < 2.0
    assert appender._connection is None
    for writer in held:
        writer.close()
    server.close()
    await mute_redis.aclose()


async def test_a_cancelled_call_leaves_no_half_read_reply_behind(
    appender: StreamAppender, redis: aioredis.Redis, stream: str
) -> None:
    await appender.xadd(b"rs", b"first")
    call = asyncio.ensure_future(appender.call(b"BLPOP", stream.encode() + b":nothing", b"5"))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # The BLPOP's reply would have been read as the next command's: the connection went with the call.
    assert appender._connection is None
    assert (await appender.xadd(b"rs", b"second")).count(b"-") == 1
