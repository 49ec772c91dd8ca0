"""A raw HTTP/1.1 worker for tests of the gateway -> worker hop, and the pool's side of it.

Each server is a few lines of asyncio streams, so a test says byte for byte what the worker sends and
when it hangs up.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeAlias

from gateway.upstream import UpstreamPool, UpstreamResponse, build_head

HOST = "127.0.0.1"
PATH = b"/v1/chat/completions"
# Bounded polling for what the server sees after the client acts (no fixed sleeps).
WAIT_S = 5.0

Reader: TypeAlias = asyncio.StreamReader
Writer: TypeAlias = asyncio.StreamWriter
Script = Callable[["Server", int, Reader, Writer], Awaitable[None]]


class Server:
    """Runs `script(server, connection_number, reader, writer)` for every connection it accepts."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.hangups = 0
        self.sent = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        # Connections still open end here, before their loop does.
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks)

    async def _handle(self, reader: Reader, writer: Writer) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.script(self, self.connections, reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            # Cancelled by __aexit__: a handler task must not end cancelled (asyncio's streams report
            # that as an unhandled error).
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def read_request(self, reader: Reader) -> tuple[bytes, bytes] | None:
        """The next request (head, body), or None when the client hung up."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"(?i)\r\ncontent-length: *(\d+)\r\n", head)
            body = await reader.readexactly(int(match.group(1)) if match else 0)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.hangups += 1
            return None
        self.requests.append((head, body))
        return head, body

    async def wait_hangup(self, reader: Reader) -> None:
        """Block until the client drops the connection (EOF or reset)."""
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.hangups += 1

    async def until(self, condition: Callable[[], bool]) -> None:
        """Poll, bounded: the conditions mix what the server saw with the client's state."""
        async with asyncio.timeout(WAIT_S):
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.005)


def reply(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body), extra, body,
    )


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def echo(server: Server, n: int, reader: Reader, writer: Writer) -> None:
    """A well-behaved keep-alive worker: answers every request with `conn <n>: <body>`."""
    while (request := await server.read_request(reader)) is not None:
        writer.write(reply(b"conn %d: %s" % (n, request[1])))
        await writer.drain()


@asynccontextmanager
async def open_pool() -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool(connect_timeout=1.0)
    try:
        yield pool
    finally:
        pool.close()


async def post(pool: UpstreamPool, server: Server, body: bytes = b'{"n":1}', head_s: float = WAIT_S
               ) -> UpstreamResponse:
    head = build_head(b"POST", PATH, b"%s:%d" % (HOST.encode(), server.port), len(body))
    return await pool.request(HOST, server.port, head, body, first_byte_timeout=head_s)
