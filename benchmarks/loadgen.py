"""The benchmark's load driver: raw asyncio HTTP/1.1 keep-alive connections parsed by httptools.

Why not aiohttp's client: the driver shares CPU 0 with the mock worker, and at thousands of responses
a second a full client would be what limits the run. A bare protocol with a C parser costs a fraction
of that. Three shapes of load, each bounded in time and in count, loopback only:

- `closed_loop`: C connections, each sending its next request when the previous answer is complete
  (max throughput, and the paced-stream TTFT run);
- `open_loop`: requests at a fixed rate whatever the answers do, latency counted from the scheduled
  send time so that a slow server cannot hide its queue (coordinated omission);
- `hold_streams`: N streams open at once, a callback while all of them are open (the RSS sample).

Every response is checked against the worker's reference answer (`ExpectedBody`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any, cast

import httptools

from benchmarks.integrity import ExpectedBody, first_difference

# No run sends more than this, whatever its duration says.
MAX_REQUESTS = 1_000_000
# After a failed request, wait this long before the next one on that connection, so a dead target
# costs a few hundred attempts a second rather than a busy loop.
_ERROR_PAUSE_S = 0.01


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __post_init__(self) -> None:
        if not ip_address(self.host).is_loopback:
            raise ValueError(f"the load driver only targets loopback addresses, not {self.host}")


def build_request(method: str, endpoint: Endpoint, path: str, body: bytes = b"",
                  headers: Mapping[str, str] | None = None) -> bytes:  # fmt: skip
    """The bytes of one HTTP/1.1 keep-alive request, built once and sent many times."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {endpoint.host}:{endpoint.port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    sent_at: float
    # When the first body byte arrived (the first SSE event of a stream); None for an empty body.
    first_byte_at: float | None
    done_at: float


class Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._chunks: list[bytes] = []
        self._status = 0
        self._sent_at = 0.0
        self._first_byte_at: float | None = None
        self._keep_alive = True
        self.closed = False
        # Called once per response, at its first body byte.
        self.on_first_byte: Callable[[], None] | None = None

    @classmethod
    async def open(cls, endpoint: Endpoint) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, endpoint.host, endpoint.port)
        return conn

    async def send(self, request: bytes, timeout_s: float) -> Response:
        if self.closed or self._transport is None:
            raise ConnectionResetError("the connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._sent_at = time.perf_counter()
        self._transport.write(request)
        async with asyncio.timeout(timeout_s):
            return await self._waiter

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without inheriting from it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    # -- httptools callbacks -------------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self._first_byte_at is None:
            self._first_byte_at = time.perf_counter()
            if self.on_first_byte is not None:
                self.on_first_byte()
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        response = Response(
            self._status, b"".join(self._chunks), self._sent_at, self._first_byte_at, time.perf_counter()
        )
        self._chunks, self._first_byte_at = [], None
        if not self._keep_alive:
            self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(response)


@dataclass
class LoadResult:
    """What one run of load saw, from the client's side."""

    ok: int = 0
    non_2xx: int = 0
    errors: int = 0
    mismatched: int = 0
    # Requests an open-loop run did not send because every allowed connection was busy.
    skipped: int = 0
    latencies_s: list[float] = field(default_factory=list)
    ttfb_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    first_error: str | None = None
    first_mismatch: str | None = None

    @property
    def answered(self) -> int:
        return self.ok + self.non_2xx

    def add(self, response: Response, started_at: float, expected: ExpectedBody) -> None:
        if not 200 <= response.status < 300:
            self.non_2xx += 1
            if self.first_error is None:
                self.first_error = f"HTTP {response.status}: {response.body[:300]!r}"
            return
        self.ok += 1
        self.latencies_s.append(response.done_at - started_at)
        if response.first_byte_at is not None:
            self.ttfb_s.append(response.first_byte_at - response.sent_at)
        if not expected.matches(response.body):
            self.mismatched += 1
            if self.first_mismatch is None:
                self.first_mismatch = first_difference(response.body, expected.normalised)

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"


# Failures of one request: counted, and the run goes on.
REQUEST_ERRORS = (OSError, TimeoutError, httptools.HttpParserError)


async def closed_loop(endpoint: Endpoint, request: bytes, expected: ExpectedBody, *, concurrency: int,
                      duration_s: float, timeout_s: float = 60.0, stagger_s: float = 0.0) -> LoadResult:  # fmt: skip
    """`concurrency` connections sending back to back for `duration_s` (each finishes its last request).

    `stagger_s` spreads the first requests out, so that paced streams do not all tick at once.
    """
    result = LoadResult()
    conns = await asyncio.gather(*(Connection.open(endpoint) for _ in range(concurrency)))
    started = time.perf_counter()
    deadline = started + duration_s
    sent = 0

    async def drive(index: int, conn: Connection) -> None:
        nonlocal sent
        if stagger_s:
            await asyncio.sleep(stagger_s * index / concurrency)
        while time.perf_counter() < deadline and sent < MAX_REQUESTS:
            sent += 1
            try:
                if conn.closed:
                    conn = await Connection.open(endpoint)
                response = await conn.send(request, timeout_s)
            except REQUEST_ERRORS as exc:
                result.error(exc)
                conn.close()
                await asyncio.sleep(_ERROR_PAUSE_S)
                continue
            result.add(response, response.sent_at, expected)
        conn.close()

    await asyncio.gather(*(drive(i, conn) for i, conn in enumerate(conns)))
    result.wall_s = time.perf_counter() - started
    return result


class _OpenLoopPool:
    """Idle keep-alive connections of an open-loop run, and a cap on how many it may open."""

    def __init__(self, endpoint: Endpoint, idle: list[Connection], limit: int) -> None:
        self.endpoint = endpoint
        self.idle = idle
        self.opened = len(idle)
        self.limit = limit

    def can_send(self) -> bool:
        return bool(self.idle) or self.opened < self.limit

    async def take(self) -> Connection:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
            self.opened -= 1
        self.opened += 1
        try:
            return await Connection.open(self.endpoint)
        except OSError:
            self.opened -= 1
            raise

    def give_back(self, conn: Connection) -> None:
        if conn.closed:
            self.opened -= 1
        else:
            self.idle.append(conn)

    def close(self) -> None:
        for conn in self.idle:
            conn.close()


async def _scheduled(pool: _OpenLoopPool, request: bytes, scheduled_at: float, result: LoadResult,
                     expected: ExpectedBody, timeout_s: float) -> None:  # fmt: skip
    try:
        conn = await pool.take()
    except OSError as exc:
        result.error(exc)
        return
    try:
        response = await conn.send(request, timeout_s)
    except REQUEST_ERRORS as exc:
        result.error(exc)
        conn.close()
    else:
        # From the scheduled time, unless the timer fired early: then from when it was really sent.
        result.add(response, min(scheduled_at, response.sent_at), expected)
    pool.give_back(conn)


async def open_loop(endpoint: Endpoint, request: bytes, expected: ExpectedBody, *, rate: float,
                    duration_s: float, max_connections: int = 256, warm_connections: int = 8,
                    timeout_s: float = 30.0) -> LoadResult:  # fmt: skip
    """`rate` requests a second for `duration_s`, on as many connections as the answers need."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    result = LoadResult()
    warm = await asyncio.gather(*(Connection.open(endpoint) for _ in range(warm_connections)))
    pool = _OpenLoopPool(endpoint, list(warm), max_connections)
    in_flight: set[asyncio.Task[None]] = set()
    started = time.perf_counter() + 0.05
    for i in range(min(int(rate * duration_s), MAX_REQUESTS)):
        scheduled_at = started + i / rate
        delay = scheduled_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if not pool.can_send():
            result.skipped += 1
            continue
        task = asyncio.create_task(_scheduled(pool, request, scheduled_at, result, expected, timeout_s))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        _, late = await asyncio.wait(set(in_flight), timeout=timeout_s + 5)
        for task in late:
            task.cancel()
    result.wall_s = time.perf_counter() - started
    pool.close()
    return result


async def hold_streams(endpoint: Endpoint, request: bytes, expected: ExpectedBody, *, count: int,
                       while_open: Callable[[int], Any], open_timeout_s: float = 30.0,
                       timeout_s: float = 120.0) -> tuple[LoadResult, Any]:  # fmt: skip
    """Open `count` streams at once; when all have started (or the wait timed out), call `while_open`
    with the number that started; then let them finish. Returns the result and what `while_open` returned."""
    result = LoadResult()
    began = time.perf_counter()
    opened = await asyncio.gather(*(Connection.open(endpoint) for _ in range(count)), return_exceptions=True)
    live = [conn for conn in opened if isinstance(conn, Connection)]
    for failure in opened:
        if isinstance(failure, BaseException):
            result.error(failure)
    started = 0
    pending = len(live)
    all_settled = asyncio.Event()

    def settle(has_started: bool) -> None:
        nonlocal started, pending
        started += has_started
        pending -= 1
        if pending == 0:
            all_settled.set()

    async def one(conn: Connection) -> None:
        streaming = False

        def first_byte() -> None:
            nonlocal streaming
            streaming = True
            settle(True)

        conn.on_first_byte = first_byte
        try:
            response = await conn.send(request, timeout_s)
        except REQUEST_ERRORS as exc:
            result.error(exc)
            return
        finally:
            conn.close()
            if not streaming:
                settle(False)
        result.add(response, response.sent_at, expected)

    tasks = [asyncio.create_task(one(conn)) for conn in live]
    if live:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_settled.wait(), open_timeout_s)
    started_streams = started
    sample = while_open(started_streams)
    await asyncio.gather(*tasks)
    result.wall_s = time.perf_counter() - began
    return result, sample


async def fetch(endpoint: Endpoint, request: bytes, timeout_s: float = 10.0) -> Response:
    """One request on a fresh connection (setup, probes, reference answers)."""
    conn = await Connection.open(endpoint)
    try:
        return await conn.send(request, timeout_s)
    finally:
        conn.close()
