"""The inference routes' own HTTP/1.1 connection: llhttp (through httptools) parses, the gateway answers.

aiohttp's server builds a request object, a payload stream, a response object and a writer for every
request, and its protocol task steps through them: measured side by side at saturation on one core, a
relay on aiohttp's low-level server cost 0.167 ms of CPU per request and the same relay on a bare
`asyncio.Protocol` with httptools 0.112 ms; at 200 req/s, 0.462 against 0.294 ms (benchmarks/RESULTS.md,
`make bench-floor`). The inference routes are most of a gateway's requests, so they are served here.

Every client connection starts as an `InferenceConnection`. A request is served here when, at a request
boundary, what was read holds its whole head and the head is exactly `POST <inference route> HTTP/1.1`
with a body of known length (`Content-Length`, or none), and no `Transfer-Encoding`, `Expect` or
`Upgrade`. Its body may come in later reads; each request runs in a task of its own, cancelled if the
client goes away (as aiohttp's `handler_cancellation`), and gets the same answer the application gives
(`InferenceCall`, gateway/inference.py, with this connection's hooks: `ConnectionCall`).

Anything else (the control API, the console, `/metrics`, an inference route with a query string,
HTTP/1.0, a chunked body, a head split across reads, a head llhttp refuses) hands the connection to
aiohttp's protocol from that request's first byte, for the rest of the connection's life: served,
refused and timed out exactly as aiohttp serves the application, `HeadTimeoutHandler` included.

What it keeps of aiohttp's behaviour: keep-alive with `keepalive_timeout`, the body deadline (408 with
`Connection: close`), 413 over the application's `client_max_size` (the rest of that body read and
dropped, within the same deadline), pipelined requests answered in order (reading pauses while more
than `_PIPELINE_HIGH` bytes wait), backpressure on a slow client (`pause_writing`), `Date` and `Server`
headers, a JSON 500 for a bug before the answer started and a closed connection after. Idle connections
close at shutdown; busy ones once their answer is out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

import httptools
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict

from gateway.error_codes import ErrorCode
from gateway.errors import ApiError, body_too_large, body_too_slow
from gateway.inference import ROUTES, InferenceCall, Route
from gateway.plane import DataPlane
from gateway.relay import StreamSink

log = logging.getLogger(__name__)

# A head not ended within this many bytes goes to aiohttp, which applies its own limits (8190 bytes a line).
MAX_HEAD = 8190 * 2
# Bytes of later (pipelined) requests held while one is served, before reading from the client pauses.
_PIPELINE_HIGH = 256 * 1024
# Headers that take a request off this path: aiohttp handles what they ask for.
_HANDED_OVER = frozenset((b"transfer-encoding", b"expect", b"upgrade"))
_SERVER = f"Server: {SERVER_SOFTWARE}\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


# The request lines served here, each with its route: `POST /v1/chat/completions HTTP/1.1`.
REQUEST_LINES = {b"POST %s HTTP/1.1" % route.path_bytes: route for route in ROUTES}


@dataclass(slots=True)
class Request:
    route: Route
    # Looked up in any case; `get` gives the first of a repeated header, as aiohttp's request does.
    headers: CIMultiDict[str]
    length: int
    # The body when it came with the head; None while it is still arriving.
    body: bytes | None
    keep_alive: bool


def status_line(status: int) -> str:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    return f"HTTP/1.1 {status} {reason}\r\n"


_STATUS_LINES = {status.value: status_line(status.value) for status in HTTPStatus}


def response_head(status: int, headers: Mapping[str, str], framing: str, keep_alive: bool) -> bytes:
    """A response head: the status line, `headers`, the body's framing line, `Date`, `Server`, and
    `Connection: close` unless the connection is kept. A value with CR or LF is refused (ValueError)."""
    lines = [_STATUS_LINES.get(status) or status_line(status)]
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise ValueError(f"a CR or LF in the value of the response header {name}")
        lines.append(f"{name}: {value}\r\n")
    lines.append(framing)
    lines.append(f"Date: {rfc822_formatted_time()}\r\n")
    lines.append(_SERVER)
    lines.append("\r\n" if keep_alive else "Connection: close\r\n\r\n")
    return "".join(lines).encode()


class InferenceConnection(asyncio.Protocol):
    """One client connection; see the module's docstring."""

    __slots__ = (
        "_body_late", "_body_left", "_body_parts", "_body_timer", "_body_waiter", "_buffer", "_closing", "_connections",
        "_drain", "_fallback", "_fields", "_head_done", "_idle_since", "_idle_timer", "_loop", "_plane",
        "_read_paused", "_request", "_task", "_transport", "_write_paused",
    )  # fmt: skip

    def __init__(
        self,
        plane: DataPlane,
        fallback: Callable[[], asyncio.Protocol],
        connections: set[InferenceConnection],
    ) -> None:
        self._plane = plane
        # aiohttp's protocol for this server: where the connection goes for anything not served here.
        self._fallback = fallback
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        # Bytes read and not yet taken, beginning at a request's first byte.
        self._buffer = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._head_done = False
        self._request: Request | None = None
        self._task: asyncio.Task[None] | None = None
        # The body still arriving: bytes left, parts kept (None: dropped), its reader, its deadline.
        self._body_left = 0
        self._body_parts: list[bytes] | None = None
        self._body_waiter: asyncio.Future[bytes] | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        # The body did not come in time: the call answers 408.
        self._body_late = False
        # Closed once the current answer is out (Connection: close, a 408, shutdown).
        self._closing = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._read_paused = False
        self._idle_since = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    # -- asyncio's calls ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is a transport without being an asyncio.Transport subclass.
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)
        self._idle()

    def data_received(self, data: bytes) -> None:
        if self._body_left:
            data = self._take_body(data)
            if self._body_left:
                return
        if data:
            self._buffer = self._buffer + data if self._buffer else data
        if self._task is None:
            self._next()
        elif len(self._buffer) > _PIPELINE_HIGH and not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._transport = None
        self._connections.discard(self)
        self._cancel_timers()
        if self._task is not None:
            self._task.cancel()
        gone = ConnectionResetError("the client closed the connection")
        for waiter in (self._drain, self._body_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_exception(gone)
                waiter.exception()  # retrieved: whoever awaits it is being cancelled
        self._drain = self._body_waiter = None

    # -- httptools' calls (the head of the request at the start of the buffer) ------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_done = True

    # -- requests -------------------------------------------------------------------------------------

    def _next(self) -> None:
        """Start the request at the start of the buffer, or hand the connection to aiohttp."""
        if self._task is not None or self._body_left or self._closing or self._transport is None:
            return
        buffer = self._buffer
        if not buffer:
            self._idle()
            return
        if self._read_paused and len(buffer) <= _PIPELINE_HIGH:
            self._read_paused = False
            self._transport.resume_reading()
        end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
        route = REQUEST_LINES.get(buffer[: buffer.find(b"\r\n")]) if end > 0 else None
        request = self._parse(buffer, end + 4, route) if route is not None else None
        if request is None:
            self._hand_over()
            return
        self._request = request
        self._task = self._loop.create_task(self._serve(request))

    def _parse(self, buffer: bytes, head_end: int, route: Route) -> Request | None:
        """The request whose head is `buffer[:head_end]`, taking what of its body was read; None when it
        is not one served here (the buffer is left as it was)."""
        self._fields = []
        self._head_done = False
        parser = httptools.HttpRequestParser(self)
        try:
            parser.feed_data(buffer[:head_end])
        except httptools.HttpParserError:
            return None
        if not self._head_done:
            return None
        length = 0
        pairs = []
        for raw_name, raw_value in self._fields:
            name = raw_name.lower()
            if name == b"content-length":
                # Digits, once: llhttp refuses a repeated or a malformed Content-Length (and one beside
                # Transfer-Encoding) before this.
                length = int(raw_value)
            elif name in _HANDED_OVER:
                return None
            pairs.append((raw_name.decode("latin-1"), raw_value.decode("utf-8", "surrogateescape")))
        headers = CIMultiDict(pairs)
        total = head_end + length
        if len(buffer) >= total:
            body: bytes | None = buffer[head_end:total]
            self._buffer = buffer[total:]
        else:
            body = None
            self._buffer = b""
            limit = self._plane.settings.max_body_bytes
            self._body_left = length
            # Over the limit the call answers 413 at once, and the body is dropped as it comes.
            self._body_parts = [] if length <= limit else None
            self._take_body(buffer[head_end:])
            self._body_timer = self._loop.call_later(self._plane.settings.body_timeout_s, self._body_timed_out)
        return Request(route, headers, length, body, parser.should_keep_alive())

    async def _serve(self, request: Request) -> None:
        plane = self._plane
        answer: bytes | None
        try:
            try:
                answer = await ConnectionCall(self, request, plane).run()
            except ApiError as exc:
                answer = self.refusal(exc, {})
            except Exception:
                if self._request is None:
                    # The answer had started (a stream): it cannot become an error.
                    log.exception("unhandled error after the answer started", extra={"path": request.route.path})
                    self._close()
                    return
                log.exception("unhandled error", extra={"method": "POST", "path": request.route.path})
                answer = self.refusal(
                    ApiError(500, "The gateway failed to handle the request.", ErrorCode.INTERNAL_ERROR), {}
                )
            transport = self._transport
            if answer is not None and transport is not None and not transport.is_closing():
                transport.write(answer)
            if self._write_paused:
                await self.drained()
        finally:
            self._task = None
        self._done()

    def _done(self) -> None:
        """The answer is out: close, wait for the rest of the body, or go on with the next request."""
        request, self._request = self._request, None
        if self._transport is None or self._transport.is_closing():
            return
        if self._closing or (request is not None and not request.keep_alive):
            self._close()
        elif not self._body_left:
            self._next()

    # -- the request body -----------------------------------------------------------------------------

    def _take_body(self, data: bytes) -> bytes:
        """Take the body's bytes from `data`; returns what follows it."""
        left = self._body_left
        part, rest = (data, b"") if len(data) <= left else (data[:left], data[left:])
        self._body_left = left - len(part)
        if self._body_parts is not None and part:
            self._body_parts.append(part)
        if not self._body_left:
            self._body_complete()
        return rest

    def _body_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        parts, self._body_parts = self._body_parts, None
        body = b"".join(parts) if parts is not None else b""
        waiter, self._body_waiter = self._body_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(body)
        elif self._request is not None and self._request.body is None:
            self._request.body = body

    def _body_timed_out(self) -> None:
        self._body_timer = None
        self._closing = True
        self._body_late = True
        self._body_left = 0
        self._body_parts = None
        waiter, self._body_waiter = self._body_waiter, None
        if waiter is not None and not waiter.done():
            timeout = self._plane.settings.body_timeout_s
            waiter.set_exception(body_too_slow(timeout))
        elif self._task is None:
            self._close()

    async def read_body(self, request: Request) -> bytes:
        settings = self._plane.settings
        if request.length > settings.max_body_bytes:
            raise body_too_large(settings.max_body_bytes)
        if request.body is not None:
            return request.body
        if self._body_late:
            raise body_too_slow(settings.body_timeout_s)
        waiter = self._loop.create_future()
        self._body_waiter = waiter
        return await waiter

    # -- answers --------------------------------------------------------------------------------------

    def answer(self, status: int, headers: Mapping[str, str], body: bytes) -> bytes:
        keep = self._keeps()
        return response_head(status, headers, f"Content-Length: {len(body)}\r\n", keep) + body

    def refusal(self, error: ApiError, headers: dict[str, str]) -> bytes:
        if error.close_connection:
            self._closing = True
        headers = error.answer_headers(headers) or {}
        headers["Content-Type"] = "application/json"
        return self.answer(error.status, headers, error.body())

    def open_stream(self, status: int, headers: Mapping[str, str]) -> ChunkedAnswer:
        self.write(response_head(status, headers, "Transfer-Encoding: chunked\r\n", self._keeps()))
        # From here on an error cannot be answered: it closes the connection (_serve).
        self._request_started()
        return ChunkedAnswer(self)

    def _request_started(self) -> None:
        request, self._request = self._request, None
        if request is not None and not request.keep_alive:
            self._closing = True

    def _keeps(self) -> bool:
        request = self._request
        return not self._closing and (request is None or request.keep_alive)

    def write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        transport.write(data)

    async def drained(self) -> None:
        if not self._write_paused:
            return
        if self._drain is None:
            self._drain = self._loop.create_future()
        await self._drain

    # -- the connection's life ------------------------------------------------------------------------

    def _hand_over(self) -> None:
        """aiohttp's protocol takes the connection, with what was read of the request at the buffer's start."""
        transport = self._transport
        assert transport is not None
        buffer, self._buffer = self._buffer, b""
        self._cancel_timers()
        self._connections.discard(self)
        self._transport = None
        protocol = self._fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._read_paused:
            transport.resume_reading()
        if self._write_paused:
            protocol.pause_writing()
        protocol.data_received(buffer)

    def _idle(self) -> None:
        self._idle_since = self._loop.time()
        if self._idle_timer is None:
            self._idle_timer = self._loop.call_later(self._plane.settings.keepalive_timeout_s, self._check_idle)

    def _check_idle(self) -> None:
        self._idle_timer = None
        keepalive = self._plane.settings.keepalive_timeout_s
        if self._busy:
            self._idle_timer = self._loop.call_later(keepalive, self._check_idle)
            return
        left = self._idle_since + keepalive - self._loop.time()
        if left > 0.001:
            self._idle_timer = self._loop.call_later(left, self._check_idle)
        else:
            self._close()

    @property
    def _busy(self) -> bool:
        return self._task is not None or self._body_left > 0 or bool(self._buffer)

    def close_idle(self) -> None:
        """Shutdown: close now if idle, else once the current answer is out."""
        if self._busy:
            self._closing = True
        else:
            self._close()

    async def finish(self, timeout_s: float | None) -> None:
        """Shutdown: give the request in flight up to `timeout_s`, then close."""
        task = self._task
        if task is not None:
            await asyncio.wait([task], timeout=timeout_s)
        self._close()

    def _close(self) -> None:
        self._cancel_timers()
        if self._transport is not None:
            self._transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._idle_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._body_timer = None


class ChunkedAnswer:
    """A streamed answer's body on the client's connection, in HTTP/1.1 chunks (a `StreamSink`).

    A write completes without suspending unless the client's socket buffer is full (`pause_writing`):
    the relay steps it by hand (gateway/relay.py)."""

    __slots__ = ("_connection",)

    def __init__(self, connection: InferenceConnection) -> None:
        self._connection = connection

    async def write(self, data: bytes) -> None:
        connection = self._connection
        if data:
            connection.write(b"%x\r\n%b\r\n" % (len(data), data))
        if connection._write_paused:
            await connection.drained()

    async def write_eof(self) -> None:
        connection = self._connection
        connection.write(_LAST_CHUNK)
        if connection._write_paused:
            await connection.drained()


class ConnectionCall(InferenceCall[bytes | None]):
    """An inference request served on an `InferenceConnection`: a whole answer is returned as the
    bytes to send, a stream is sent as it goes (None)."""

    __slots__ = ("connection", "request")

    def __init__(self, connection: InferenceConnection, request: Request, plane: DataPlane) -> None:
        super().__init__(request.headers, request.route, plane)
        self.connection = connection
        self.request = request

    async def _read_body(self) -> bytes:
        return await self.connection.read_body(self.request)

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> bytes | None:
        return self.connection.answer(status, headers, body)

    def _refusal(self, error: ApiError, headers: dict[str, str]) -> bytes | None:
        return self.connection.refusal(error, headers)

    async def _open_stream(
        self, status: int, headers: dict[str, str], content_type: str
    ) -> tuple[StreamSink, bytes | None]:
        headers["Content-Type"] = content_type
        return self.connection.open_stream(status, headers), None

    def _sent(self, answer: bytes | None) -> bool:
        return answer is None
