"""The usage flusher's `XADD`, on a connection of its own, around redis-py's per-command layers.

redis-py 8 runs each command through some 250 Python calls: retry wrapper, pool checkout and release,
observability hooks, timeout contexts, response callbacks. Measured at 40 `XADD`s of 3 KB a second (a
gateway at 200 req/s flushing every 25 ms) on an otherwise idle core: 0.45-0.58 ms of CPU each through
`Redis.xadd`, about as much through the pool connection's own `send_packed_command`/`read_response`,
against 0.13-0.22 ms with the command written to the socket and its reply read by hiredis's parser.
At that rate this was about a tenth of the gateway's CPU per request, spent in bursts the next
request waited behind.

The connection is still made by redis-py (`make_connection()` then `connect()`: the URL's scheme,
TLS, AUTH and SELECT are its business); only the command and its reply go around it, over that
connection's asyncio streams (`_reader`/`_writer`, its attributes since redis-py 4.2; a test of this
module fails if they go). Every failure is a `RedisError`, and the connection is dropped with it: the
next call makes a new one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Longest wait for a reply, as the shared client's socket timeout (inventiv/services.py).
TIMEOUT_S = 2.0
_READ_BYTES = 64 * 1024


def pack(*parts: bytes) -> bytes:
    """One command in the Redis protocol (RESP): an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class StreamAppender:
    """`XADD <stream> * <field> <value>` on a connection of its own, one call at a time (the flusher
    is one task)."""

    def __init__(self, redis: aioredis.Redis, stream: str, *, timeout_s: float = TIMEOUT_S) -> None:
        self._pool = redis.connection_pool
        self._stream = stream.encode()
        self._timeout_s = timeout_s
        self._connection: Any = None

    async def xadd(self, field: bytes, value: bytes) -> bytes:
        """Append one entry; returns its id. Raises a `RedisError` when it may not be in the stream."""
        entry_id = await self.call(b"XADD", self._stream, b"*", field, value)
        if not isinstance(entry_id, bytes):
            await self.close()
            raise ResponseError(f"unexpected reply to XADD: {entry_id!r}")
        return entry_id

    async def call(self, *parts: bytes) -> Any:
        """One command, its reply as hiredis reads it; an error reply raises `ResponseError`."""
        command = pack(*parts)
        reused = self._connection is not None
        try:
            reply = await self._round_trip(command)
        except RedisConnectionError:
            if not reused:
                raise
            # A connection idle since its last use may have been closed by Redis (a restart, its idle
            # timeout): once more on a new one, as redis-py retries. An XADD that had reached the
            # stream is then there twice: the usage writer is idempotent on request_id.
            reply = await self._round_trip(command)
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        return reply

    async def _round_trip(self, command: bytes) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                if self._connection is None:
                    connection = self._pool.make_connection()
                    await connection.connect()
                    self._connection = connection
                reader: asyncio.StreamReader = self._connection._reader
                writer: asyncio.StreamWriter = self._connection._writer
                writer.write(command)
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
