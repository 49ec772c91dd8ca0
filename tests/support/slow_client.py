"""An aiohttp streaming response to a client that reads only when told, on real sockets on 127.0.0.1.

Both ends keep small kernel buffers (the client's receive buffer, the server's send buffer), so a client
that does not read fills them after a few KiB and the response's writes soon wait for it to drain: what
a slow client does to the relay, without megabytes of traffic.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httptools
from aiohttp import web

HOST = "127.0.0.1"
# Linux doubles what is asked and has a floor of a few KiB: these give buffers of 8 KiB.
CLIENT_RCVBUF = 4096
SERVER_SNDBUF = 4096
# Bounded waits: a test that would hang fails instead.
WAIT_S = 5.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SlowClient:
    """One GET on a raw socket; the response is read only by `read_body()`."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.status = 0
        self.body = bytearray()
        self.complete = False
        self._parser = httptools.HttpResponseParser(self)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

    async def read_body(self) -> bytes:
        """Read until the response ends (chunked framing undone); its whole body."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(WAIT_S):
            while not self.complete:
                data = await loop.sock_recv(self.sock, 65536)
                if not data:
                    raise ConnectionError(f"the server closed the connection after {len(self.body)} body bytes")
                self._parser.feed_data(data)
        return bytes(self.body)

    def reset(self) -> None:
        """Go away abruptly: close with a TCP reset, as a client that crashed or timed out does."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


@asynccontextmanager
async def slow_client(handler: Handler) -> AsyncIterator[tuple[SlowClient, asyncio.Future[web.StreamResponse]]]:
    """Serve one GET with `handler` to a client that does not read; yields the client and the future of
    what the handler returned (or raised)."""
    done: asyncio.Future[web.StreamResponse] = asyncio.get_running_loop().create_future()

    async def handle(request: web.Request) -> web.StreamResponse:
        request.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SERVER_SNDBUF)
        try:
            response = await handler(request)
        except BaseException as exc:
            done.set_exception(exc)
            raise
        done.set_result(response)
        return response

    app = web.Application()
    app.router.add_get("/", handle)
    # Handlers left running by a failed test are not waited for a minute.
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = runner.addresses[0][1]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (HOST, port))
        await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (HOST.encode(), port))
        yield SlowClient(sock), done
    finally:
        sock.close()
        await runner.cleanup()


@asynccontextmanager
async def prepared_response() -> AsyncIterator[tuple[SlowClient, web.StreamResponse]]:
    """A prepared (chunked) StreamResponse to a slow client, for the test to write to as it likes."""
    prepared: asyncio.Future[web.StreamResponse] = asyncio.get_running_loop().create_future()
    finished = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        prepared.set_result(response)
        await finished.wait()
        return response

    async with slow_client(handler) as (client, _):
        async with asyncio.timeout(WAIT_S):
            response = await prepared
        try:
            yield client, response
        finally:
            finished.set()

