"""The usage flusher's `XADD`, on a connection of its own, around redis-py's per-command layers.

redis-py 8 runs each command through some 250 Python calls: retry wrapper, pool checkout and release,
observability hooks, timeout contexts, response callbacks. Measured at 40 `XADD`s of 3 KB a second (a
gateway at 200 req/s flushing every 25 ms) on an otherwise idle core, side by side: 0.60-0.66 ms of
CPU each through `Redis.xadd` (about as much through the pool connection's own
`send_packed_command`/`read_response`), 0.32-0.39 ms through this class. At that rate the difference
was about a tenth of the gateway's CPU per request, spent in bursts the next request waited behind.

The connection is still made by redis-py (`make_connection()` then `connect()`: the URL's scheme,
TLS, AUTH and SELECT are its business), and so is the command's encoding (`pack_command`); only
sending it and reading its reply go around it, over that
connection's asyncio streams (`_reader`/`_writer`, its attributes since redis-py 4.2; a test of this
module fails if they go). Every failure is a `RedisError`, and the connection is dropped with it: the
next call makes a new one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Longest wait for a reply, as the shared client's socket timeout (inventiv/services.py).
TIMEOUT_S = 2.0
_READ_BYTES = 64 * 1024


class StreamAppender:
    """`XADD <stream> * <field> <value>` on a connection of its own, one call at a time (the flusher
    is one task)."""

    def __init__(self, redis: aioredis.Redis, stream: str, *, timeout_s: float = TIMEOUT_S) -> None:
        self._pool = redis.connection_pool
        self._stream = stream.encode()
        self._timeout_s = timeout_s
        self._connection: AbstractConnection | None = None

    async def xadd(self, field: bytes, value: bytes) -> bytes:
        """Append one entry; returns its id. Raises a `RedisError` when it may not be in the stream."""
        entry_id = await self.call(b"XADD", self._stream, b"*", field, value)
        if not isinstance(entry_id, bytes):
            await self.close()
            raise ResponseError(f"unexpected reply to XADD: {entry_id!r}")
        return entry_id

    async def call(self, *parts: bytes) -> Any:
        """One command, its reply as hiredis reads it; an error reply raises `ResponseError`."""
        reused = self._connection is not None
        try:
            reply = await self._round_trip(parts)
        except RedisConnectionError:
            if not reused:
                raise
            # A connection idle since its last use may have been closed by Redis (a restart, its idle
            # timeout): once more on a new one, as redis-py retries. An XADD that had reached the
            # stream is then there twice: the usage writer is idempotent on request_id.
            reply = await self._round_trip(parts)
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        return reply

    async def _round_trip(self, parts: tuple[bytes, ...]) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                connection = self._connection
                if connection is None:
                    connection = self._pool.make_connection()
                    await connection.connect()
                    self._connection = connection
                reader = connection._reader
                writer = connection._writer
                assert reader is not None and writer is not None, "a connected redis-py connection has its streams"
                # redis-py's own encoding of the command (RESP), written here rather than through its send path.
                writer.writelines(connection.pack_command(*parts))
                parser = hiredis.Reader()
                while (reply := parser.gets()) is False:
                    data = await reader.read(_READ_BYTES)
                    if not data:
                        raise RedisConnectionError("Redis closed the connection")
                    parser.feed(data)
                return reply
        except TimeoutError as exc:
            await self.close()
            raise RedisTimeoutError(f"no reply from Redis within {self._timeout_s} s") from exc
        except (OSError, hiredis.ProtocolError) as exc:
            await self.close()
            raise RedisConnectionError(f"Redis connection failed: {exc}") from exc
        except BaseException:
            # A cancelled or failed round trip leaves the connection out of step with its replies.
            await self.close()
            raise

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect(nowait=True)
