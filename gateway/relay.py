"""Relaying a worker's response to the client: JSON in one piece, SSE byte for byte as it arrives.

The stream loop does per chunk: one read, one write, two substring tests and one `count`. It decodes
JSON only for the event that carries usage. When the gateway itself turned usage reporting on (the
client did not ask), it forwards whole events only, so that the usage-only event can be dropped even
when the worker's writes split it across reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway import sse
from gateway.coro_step import step_coroutine
from gateway.error_codes import ErrorCode
from gateway.upstream import UpstreamError, UpstreamResponse


@dataclass(slots=True)
class Outcome:
    """What the relay saw; the caller turns it into the usage record."""

    usage: dict[str, Any] | None = None
    first_byte_at: float | None = None
    events: int = 0
    # The upstream failed after the response started: the client got an error event instead of the rest.
    upstream_error: str | None = None
    complete: bool = False
    # The client went away mid-stream (a write to it failed).
    client_gone: bool = False


def is_json(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


def json_usage(body: bytes) -> dict[str, Any] | None:
    if not sse.has_usage(body):
        return None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    usage = payload.get("usage") if isinstance(payload, dict) else None
    return usage if isinstance(usage, dict) else None


def content_type(up: UpstreamResponse, default: str) -> str:
    value = up.header(b"content-type")
    return value.decode("latin-1") if value else default


class StreamRelay:
    """The sink a streaming response's chunks are pushed into, from the upstream connection's callback.

    A chunk is written to the client at once: `response.write()` completes without suspending unless
    the client's socket buffer is full. Then the write is parked, the worker's connection paused and
    later chunks held, until the client drains; the write coroutine is stepped by hand, as a task
    would (`step_coroutine`), because this runs inside a protocol callback where nothing may be awaited.
    """

    __slots__ = (
        "backlog", "clock", "failed", "loop", "out", "outcome", "parked", "paused", "pending", "settled", "strip",
        "tail", "up", "write",
    )  # fmt: skip

    def __init__(
        self, response: StreamSink, up: UpstreamResponse, outcome: Outcome, strip: bool, clock: Any
    ) -> None:
        self.write = response.write
        self.up = up
        self.outcome = outcome
        self.strip = strip
        self.clock = clock
        self.loop = asyncio.get_running_loop()
        # Bytes after the last complete event, held back while stripping (an event may span reads).
        self.pending = b""
        # The last reads, kept (not copied) to find the usage event at the end of the stream.
        self.tail: tuple[bytes, bytes, bytes] = (b"", b"", b"")
        # Chunks of the current read from the worker, written together by flush().
        self.out: list[bytes] = []
        self.parked: Coroutine[Any, Any, None] | None = None
        self.paused = False
        self.backlog: list[bytes] = []
        self.failed: BaseException | None = None
        self.settled: asyncio.Future[None] | None = None

    def __call__(self, chunk: bytes) -> None:
        outcome = self.outcome
        if outcome.first_byte_at is None:
            outcome.first_byte_at = self.clock()
        outcome.events += sse.count_data_events(chunk)
        if self.strip:
            block, self.pending = sse.split_complete(self.pending + chunk if self.pending else chunk)
            if block and sse.has_usage(block):
                block, outcome.usage = sse.take_usage(block, strip=True)
            chunk = block
        else:
            self.tail = (self.tail[1], self.tail[2], chunk)
        if chunk:
            self.out.append(chunk)

    def flush(self) -> None:
        """Write what the last read from the worker carried, in one piece."""
        out = self.out
        if out:
            self.out = []
            self.send(out[0] if len(out) == 1 else b"".join(out))

    def send(self, data: bytes) -> None:
        if self.failed is not None:
            return
        if self.parked is not None:
            self.backlog.append(data)
            return
        self._run(self.write(data))

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        """Step the write `coro`; when it completes, write what was held behind it, in order."""
        while self._step(coro):
            if not self.backlog:
                if self.paused:
                    self.paused = False
                    self.up.resume()
                self._settle()
                return
            coro = self.write(self.backlog.pop(0))

    def _step(self, coro: Coroutine[Any, Any, None]) -> bool:
        """True when the write completed; False when it is parked or failed."""
        try:
            done = step_coroutine(coro, self._run)
        except Exception as exc:
            # The client is gone (or its connection broke): stop the worker too.
            self.parked = None
            self.failed = exc
            self.backlog.clear()
            self.up.close()
            self._settle()
            return False
        if done:
            self.parked = None
            return True
        self.parked = coro
        if not self.paused:
            self.paused = True
            self.up.pause()
        return False

    def _settle(self) -> None:
        if self.settled is not None and not self.settled.done():
            self.settled.set_result(None)

    async def wait_settled(self) -> None:
        """Until a parked write and the chunks held behind it have gone out (or failed)."""
        if self.parked is not None:
            self.settled = self.loop.create_future()
            await self.settled

    def close(self) -> None:
        if self.parked is not None:
            self.parked.close()
            self.parked = None
        self.backlog.clear()


class StreamSink(Protocol):
    """Where a stream's bytes go once its head is sent: aiohttp's prepared `StreamResponse`, or the
    inference connection's chunked answer (gateway/inference_connection.py)."""

    async def write(self, data: bytes) -> None: ...

    async def write_eof(self) -> None: ...


async def relay_to(
    response: StreamSink,
    up: UpstreamResponse,
    outcome: Outcome,
    *,
    strip_usage: bool,
    clock: Any,
    before_end: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Relay the worker's stream into `response`, whose head was sent, to its end (or the client's)."""
    relay = StreamRelay(response, up, outcome, strip_usage, clock)
    try:
        try:
            await up.stream(relay)
            outcome.complete = True
        except UpstreamError as exc:
            # Closed, stuck, or bytes that are not HTTP (a broken chunked encoding): the same cut stream.
            outcome.upstream_error = str(exc)
        await relay.wait_settled()
    finally:
        # Even when cancelled: a client that leaves once it has the usage event and [DONE] (before the
        # worker ended its response, or while the end goes out) is billed the worker's count.
        pending = _take_usage(relay, outcome)
        relay.close()
    if relay.failed is not None:
        outcome.complete = False
        outcome.upstream_error = None
        outcome.client_gone = True
        return
    if before_end is not None:
        # The caller's last word before the end of the answer goes out (the durable usage record).
        await before_end()
    # The last bytes the client got: whole events only while stripping, the worker's last read otherwise.
    last = b"" if relay.strip else relay.tail[2]
    try:
        await _finish(response, pending, outcome, last)
    except ConnectionResetError:
        # The client left after the last event (it had the answer): nothing to report, nothing to log.
        outcome.client_gone = not outcome.complete


def _take_usage(relay: StreamRelay, outcome: Outcome) -> bytes:
    """The usage in the stream's tail or in its held-back bytes; returns the held-back bytes to forward."""
    pending = relay.pending
    if pending and sse.has_usage(pending):
        # A last event with no blank line after it (or a cut one): forwarded as the worker sent it.
        pending, outcome.usage = sse.take_usage(pending, strip=True)
    if not relay.strip and outcome.usage is None:
        last = b"".join(relay.tail)
        if sse.has_usage(last):
            outcome.usage = sse.usage_in_tail(last)
    return pending


async def _finish(response: StreamSink, pending: bytes, outcome: Outcome, last: bytes) -> None:
    """The end of a stream: held-back bytes, or the error event if it was cut."""
    if outcome.upstream_error is None:
        if pending:
            await response.write(pending)
    else:
        # Cut mid-event: held-back bytes are dropped, and an event already half forwarded is ended, so
        # that the error arrives as an event of its own.
        cut = b"\n\n" if last and not last.endswith((b"\n\n", b"\r\n\r\n")) else b""
        message = f"The worker failed mid-stream: {outcome.upstream_error}"
        await response.write(cut + sse.error_event(message, ErrorCode.UPSTREAM_ERROR))
    await response.write_eof()
