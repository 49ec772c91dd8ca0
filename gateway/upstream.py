"""A lean HTTP/1.1 client for the gateway -> worker hop, with keep-alive pools per worker.

Why not aiohttp's ClientSession: on this hop it costs more CPU per request than a whole Rust router
(the bare aiohttp proxy measures 0.30 ms against sglang-router's 0.17 ms). The hop is narrow (POST
or GET to a known OpenAI-compatible server on a private network, JSON or SSE back), so a protocol
with httptools' C parser does the job: the response body is handed over as the parser produces
it, with no per-chunk task switch or copy beyond the parser's own.

Failure contract, used by the proxy to decide on a retry:
- `UpstreamConnectError` / `UpstreamConnectTimeout`: nothing reached the worker;
- `UpstreamTimeout`: no response head within the first-byte timeout (or the stream went idle);
- `UpstreamClosed`: the connection died before the response was complete.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

import httptools

# Re-exported: the hop's failures are known by this module's name (gateway/upstream_errors.py says why apart).
from gateway.upstream_errors import UpstreamClosed as UpstreamClosed
from gateway.upstream_errors import UpstreamConnectError as UpstreamConnectError
from gateway.upstream_errors import UpstreamConnectTimeout as UpstreamConnectTimeout
from gateway.upstream_errors import UpstreamError as UpstreamError
from gateway.upstream_errors import UpstreamProtocolError as UpstreamProtocolError
from gateway.upstream_errors import UpstreamTimeout as UpstreamTimeout

# A worker's idle keep-alive connection is dropped by the server after its own timeout (uvicorn, which
# serves vLLM, uses 5 s). Reusing one just as the server closes it fails the request, so we retire
# idle connections a second earlier.
_IDLE_TTL_S = 4.0
# Idle connections kept per worker; beyond this, finished connections are closed. A worker rarely
# needs more simultaneous requests than this from one gateway process.
_MAX_IDLE_PER_WORKER = 512
# Pause reading from the worker when this much response body waits for a slow client.
_READ_HIGH_WATER = 256 * 1024
# A request body shorter than this is copied behind the head and goes out in one write; from this size
# on, head and body are two writes and the body is not copied. Copying 16 KiB takes a couple of
# microseconds, no more than one more send() system call costs: below it the copy is the cheaper.
COPY_BODY_BELOW = 16 * 1024


class Sink(Protocol):
    """Where `UpstreamResponse.stream()` pushes body chunks."""

    def __call__(self, chunk: bytes) -> None: ...

    def flush(self) -> None: ...


class _StaleConnection(Exception):
    """The connection died before any byte of the response: the request never reached the worker."""

    def __init__(self, cause: UpstreamClosed) -> None:
        super().__init__(str(cause))
        self.cause = cause


class UpstreamResponse:
    """One response. Body chunks are buffered until read; `read()` returns what has arrived so far."""

    __slots__ = (
        "_chunks", "_conn", "_done", "_error", "_head_waiter", "_idle_handle", "_idle_timeout",
        "_last_activity", "_loop", "_sink", "_waiter", "buffered", "connect_s", "headers", "received", "status",
    )

    def __init__(self, conn: UpstreamConnection, loop: asyncio.AbstractEventLoop) -> None:
        self._conn: UpstreamConnection | None = conn
        self._loop = loop
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self.buffered = 0
        # True once any byte of the response arrived: then a retry could repeat work the worker did.
        self.received = False
        self._done = False
        self._error: Exception | None = None
        self._head_waiter: asyncio.Future[None] = loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._idle_timeout = 0.0
        self._last_activity = 0.0
        self._sink: Sink | None = None
        # Seconds spent opening a new connection for it; 0.0 on a reused keep-alive connection.
        self.connect_s = 0.0

    # -- called by the connection ------------------------------------------------------------------

    def _on_head(self) -> None:
        if not self._head_waiter.done():
            self._head_waiter.set_result(None)

    def _on_body(self, chunk: bytes) -> None:
        if self._sink is not None:
            self._last_activity = self._loop.time()
            self._sink(chunk)
            return
        self._chunks.append(chunk)
        self.buffered += len(chunk)
        self._last_activity = self._loop.time()
        if self.buffered > _READ_HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _on_complete(self) -> None:
        self._done = True
        self._conn = None
        self._cancel_idle_timer()
        self._wake()

    def _fail(self, exc: Exception) -> None:
        if self._done:
            return
        self._error = exc
        self._done = True
        self._conn = None
        self._cancel_idle_timer()
        if not self._head_waiter.done():
            self._head_waiter.set_exception(exc)
            # Retrieved by wait_head, or nobody waits any more: either way do not warn about it.
            self._head_waiter.exception()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- used by the proxy -------------------------------------------------------------------------

    async def wait_head(self, limit_s: float) -> None:
        handle = self._loop.call_later(limit_s, self._head_timed_out, limit_s)
        try:
            await self._head_waiter
        finally:
            handle.cancel()

    def _head_timed_out(self, timeout: float) -> None:
        self._abort(UpstreamTimeout(f"no response from the worker within {timeout:g} s"))

    def _abort(self, exc: Exception) -> None:
        """Fail with `exc` and drop the connection, so the worker sees the hang-up and stops."""
        conn = self._conn
        self._fail(exc)
        if conn is not None:
            conn.abort()

    def watch_idle(self, timeout: float) -> None:
        """Fail the response if no body byte arrives for `timeout` seconds (a stuck worker)."""
        self._idle_timeout = timeout
        self._last_activity = self._loop.time()
        self._idle_handle = self._loop.call_later(timeout, self._check_idle)

    def _check_idle(self) -> None:
        idle = self._loop.time() - self._last_activity
        if idle < self._idle_timeout:
            self._idle_handle = self._loop.call_later(self._idle_timeout - idle, self._check_idle)
            return
        self._idle_handle = None
        self._abort(UpstreamTimeout(f"the worker sent nothing for {self._idle_timeout:g} s"))

    def _cancel_idle_timer(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    @property
    def complete(self) -> bool:
        return self._done and self._error is None

    def header(self, name: bytes) -> bytes | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    async def read(self) -> bytes:
        """Everything received since the last call; b"" at the end. Raises the failure, if any."""
        while not self._chunks:
            if self._done:
                if self._error is not None:
                    raise self._error
                return b""
            self._waiter = self._loop.create_future()
            await self._waiter
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        if self.buffered > _READ_HIGH_WATER and self._conn is not None:
            self._conn.resume()
        self.buffered = 0
        return data

    async def stream(self, sink: Sink) -> None:
        """Hand each body chunk to `sink` from the connection's own callback, as it is parsed, and
        call `sink.flush()` after each read from the socket, until the response ends; raises the
        failure, if any.

        No future and no task switch per chunk: on a stream of small events that is most of the cost
        of relaying one. The sink must not block; it applies backpressure with `pause()`/`resume()`.
        """
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks = []
            self.buffered = 0
            self.resume()
            sink(data)
            sink.flush()
        self._sink = sink
        try:
            while not self._done:
                self._waiter = self._loop.create_future()
                await self._waiter
        finally:
            self._sink = None
        if self._error is not None:
            raise self._error

    def pause(self) -> None:
        """Stop reading from the worker (its TCP window fills and it waits)."""
        if self._conn is not None:
            self._conn.pause()

    def resume(self) -> None:
        if self._conn is not None:
            self._conn.resume()

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Abandon the response: a connection still receiving it is aborted, so the worker stops."""
        conn = self._conn
        self._conn = None
        self._cancel_idle_timer()
        if conn is not None:
            conn.abort()
        if not self._done:
            self._fail(UpstreamClosed("response abandoned"))


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("_paused", "_pool", "closed", "idle_since", "key", "parser", "response", "transport")

    def __init__(self, pool: UpstreamPool, key: tuple[str, int]) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.idle_since = 0.0
        self._paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Small SSE events must leave at once, not wait for Nagle's algorithm.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            # Bytes nobody asked for: the connection is out of step, never reuse it.
            self.abort()
            return
        response.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(UpstreamProtocolError(f"malformed response from the worker: {exc}"))
            self.abort()
        if response._sink is not None:
            # Everything this read carried has reached the sink: one write to the client for it all.
            response._sink.flush()

    def eof_received(self) -> bool | None:
        self._lost(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        response, self.response = self.response, None
        if response is None:
            return
        if exc is None and response.status and not _delimited(response):
            # A body with neither Content-Length nor chunked encoding ends when the server closes
            # the connection (RFC 9112, 6.3): that close is the normal end, not a failure.
            response._on_complete()
            return
        reason = f": {exc}" if exc else ""
        response._fail(UpstreamClosed(f"the worker closed the connection mid-response{reason}"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.response is None:
            # A second response in the same read, to no request of ours: the stream is out of step.
            self.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.response is not None:
            self.response.status = self.parser.get_status_code()
            self.response._on_head()

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._on_body(body)

    def on_message_complete(self) -> None:
        response, self.response = self.response, None
        if response is None:
            self.abort()
            return
        keep_alive = self.parser.should_keep_alive()
        response._on_complete()
        if keep_alive and not self.closed:
            self.resume()
            self._pool._release(self)
        else:
            self.abort()

    # flow control and teardown
    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Keep-alive connections per worker (host, port), reused most-recent first."""

    def __init__(self, connect_timeout: float) -> None:
        self._connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int], deque[UpstreamConnection]] = {}
        self._closed = False

    async def request(
        self, host: str, port: int, head: bytes, body: bytes, *, first_byte_timeout: float
    ) -> UpstreamResponse:
        """Send one request and wait for the response head. `head` ends with the blank line."""
        loop = asyncio.get_running_loop()
        key = (host, port)
        conn = self._take_idle(key, loop.time())
        if conn is not None:
            try:
                return await self._exchange(conn, loop, head, body, first_byte_timeout)
            except _StaleConnection:
                # The worker closed this idle connection just before our request reached it: nothing
                # was processed, so one more try on a fresh connection is safe.
                pass
        began = loop.time()
        conn = await self._connect(key, loop)
        connect_s = loop.time() - began
        try:
            response = await self._exchange(conn, loop, head, body, first_byte_timeout)
        except _StaleConnection as exc:
            raise exc.cause from None
        response.connect_s = connect_s
        return response

    async def _exchange(
        self, conn: UpstreamConnection, loop: asyncio.AbstractEventLoop, head: bytes, body: bytes, limit_s: float
    ) -> UpstreamResponse:
        response = self._send(conn, loop, head, body)
        try:
            await response.wait_head(limit_s)
        except UpstreamClosed as exc:
            if response.received:
                raise
            raise _StaleConnection(exc) from None
        except BaseException:
            response.close()
            raise
        return response

    def _send(
        self, conn: UpstreamConnection, loop: asyncio.AbstractEventLoop, head: bytes, body: bytes
    ) -> UpstreamResponse:
        response = UpstreamResponse(conn, loop)
        conn.response = response
        assert conn.transport is not None
        conn.transport.write(head + body if len(body) < COPY_BODY_BELOW else head)
        if len(body) >= COPY_BODY_BELOW:
            # Large bodies go as a second write rather than being copied into one buffer.
            conn.transport.write(body)
        return response

    def _take_idle(self, key: tuple[str, int], now: float) -> UpstreamConnection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < _IDLE_TTL_S:
                return conn
            conn.abort()
        return None

    async def _connect(self, key: tuple[str, int], loop: asyncio.AbstractEventLoop) -> UpstreamConnection:
        factory: Callable[[], UpstreamConnection] = lambda: UpstreamConnection(self, key)  # noqa: E731
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(factory, key[0], key[1]), self._connect_timeout
            )
        except TimeoutError:
            raise UpstreamConnectTimeout(
                f"connecting to the worker at {key[0]}:{key[1]} took over {self._connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise UpstreamConnectError(
                f"cannot connect to the worker at {key[0]}:{key[1]}: {exc.strerror or exc}"
            ) from None
        return conn

    def _release(self, conn: UpstreamConnection) -> None:
        if self._closed:
            conn.abort()
            return
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = deque()
        if len(idle) >= _MAX_IDLE_PER_WORKER:
            conn.abort()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        idle.append(conn)

    def forget(self, host: str, port: int) -> None:
        """Close the idle connections to a worker that left the fleet."""
        for conn in self._idle.pop((host, port), ()):
            conn.abort()

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()


def _delimited(response: UpstreamResponse) -> bool:
    """True when the response says where its body ends (Content-Length or chunked)."""
    if response.header(b"content-length") is not None:
        return True
    encoding = response.header(b"transfer-encoding")
    return encoding is not None and b"chunked" in encoding.lower()


def build_head(method: bytes, path: bytes, host: bytes, body_len: int, extra: bytes = b"") -> bytes:
    """The request line and headers; `extra` is pre-encoded `Name: value\\r\\n` lines."""
    return b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n" % (
        method, path, host, body_len, extra,
    )
