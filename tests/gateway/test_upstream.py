"""gateway.upstream, the keep-alive client of the gateway -> worker hop, against raw local HTTP servers.

Each server is a few lines of asyncio streams, so a test says byte for byte what the worker sends and
when it hangs up. Every test runs on asyncio's own loop and on uvloop (the gateway's): the client is a
bare protocol, and the two loops' transports differ in how they report EOF and pause reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from event_loops import LOOPS, on_both_loops, run_on
from raw_worker import (
    CHUNKED_HEAD,
    HOST,
    LAST_CHUNK,
    PATH,
    WAIT_S,
    Reader,
    Server,
    Writer,
    chunk,
    echo,
    open_pool,
    post,
    reply,
)

from gateway import upstream
from gateway.upstream import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
    build_head,
)

# The pool pauses reading at 256 KiB buffered; one socket read (up to 256 KiB on both loops) can
# overshoot that before the pause takes effect. 1 MiB is a comfortable bound that is still far from
# the body sizes the backpressure test sends.
BUFFER_BOUND = 1024 * 1024

Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=list(LOOPS))
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a coroutine to the end on each loop in turn (for tests that are parametrized themselves)."""

    def run(coro: Coroutine[Any, Any, None]) -> None:
        run_on(request.param, coro)

    return run


async def read_until_error(response: UpstreamResponse) -> tuple[bytes, Exception | None]:
    """The body bytes read before `read()` raised, and what it raised."""
    parts = []
    try:
        while data := await response.read():
            parts.append(data)
    except Exception as exc:
        return b"".join(parts), exc
    return b"".join(parts), None


# -- keep-alive and body framing -------------------------------------------------------------------


@on_both_loops
async def test_keep_alive_reuses_one_connection() -> None:
    async with Server(echo) as server, open_pool() as pool:
        first = await post(pool, server, b'{"n":1}')
        assert (first.status, await first.read_all(), first.complete) == (200, b'conn 1: {"n":1}', True)
        second = await post(pool, server, b'{"n":2}')
        assert await second.read_all() == b'conn 1: {"n":2}'
        assert server.connections == 1
        head, body = server.requests[1]
        assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert b"\r\nContent-Length: 7\r\n" in head and body == b'{"n":2}'


@on_both_loops
async def test_large_request_body_arrives_whole() -> None:
    body = b'{"prompt":"' + b"x" * 100_000 + b'"}'
    async with Server(echo) as server, open_pool() as pool:
        response = await post(pool, server, body)
        assert await response.read_all() == b"conn 1: " + body
        assert server.requests[0][1] == body


async def sse_in_chunks(server: Server, n: int, reader: Reader, writer: Writer) -> None:
    while await server.read_request(reader) is not None:
        writer.write(CHUNKED_HEAD)
        for event in (b"data: 1\n\n", b"data: 2\n\n", b": ping\n\n", b"data: [DONE]\n\n"):
            writer.write(chunk(event))
            await writer.drain()
            await asyncio.sleep(0.001)
        writer.write(LAST_CHUNK)
        await writer.drain()


@on_both_loops
async def test_chunked_body_then_the_connection_is_reused() -> None:
    async with Server(sse_in_chunks) as server, open_pool() as pool:
        for _ in range(2):
            response = await post(pool, server)
            assert response.header(b"transfer-encoding") == b"chunked"
            assert response.header(b"CONTENT-TYPE") == b"text/event-stream"
            assert response.header(b"content-length") is None
            assert await response.read_all() == b"data: 1\n\ndata: 2\n\n: ping\n\ndata: [DONE]\n\n"
            assert response.complete
            assert await response.read() == b""
        assert server.connections == 1


async def close_delimited(server: Server, n: int, reader: Reader, writer: Writer) -> None:
    await server.read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"ok\":")
    await writer.drain()
    writer.write(b"true}")
    await writer.drain()


@on_both_loops
async def test_body_delimited_by_connection_close() -> None:
    # HTTP/1.1 allows a response with neither Content-Length nor chunked framing: the body ends when
    # the server closes the connection (RFC 9112, 6.3 rule 8).
    async with Server(close_delimited) as server, open_pool() as pool:
        response = await post(pool, server)
        assert await read_until_error(response) == (b'{"ok":true}', None)
        assert response.complete


# -- connections the server drops ------------------------------------------------------------------


async def answer_then_close(server: Server, n: int, reader: Reader, writer: Writer) -> None:
    """Answers one request as keep-alive, then closes the idle connection (an idle timeout)."""
    if (request := await server.read_request(reader)) is not None:
        writer.write(reply(b"conn %d: %s" % (n, request[1])))
        await writer.drain()


@on_both_loops
async def test_an_idle_connection_closed_by_the_server_is_replaced() -> None:
    async with Server(answer_then_close) as server, open_pool() as pool:
        assert await (await post(pool, server)).read_all() == b'conn 1: {"n":1}'
        await server.until(lambda: server.connections == 1 and server.requests != [])
        assert await (await post(pool, server)).read_all() == b'conn 2: {"n":1}'
        assert server.connections == 2


async def drop_second_request(server: Server, n: int, reader: Reader, writer: Writer) -> None:
    """The first connection answers one request, then closes on the next one without a byte of answer:
    the race of a reused connection against the server's idle timeout."""
    if n > 1:
        await echo(server, n, reader, writer)
        return
    request = await server.read_request(reader)
    assert request is not None
    writer.write(reply(b"conn 1: " + request[1]))
    await writer.drain()
    await server.read_request(reader)


def test_an_idle_connection_past_its_ttl_is_not_reused(monkeypatch: pytest.MonkeyPatch, run: Run) -> None:
    # Workers drop idle connections after their own timeout; the pool retires them first.
    monkeypatch.setattr(upstream, "_IDLE_TTL_S", 0.05)

    async def scenario() -> None:
        async with Server(echo) as server, open_pool() as pool:
            await (await post(pool, server)).read_all()
            await asyncio.sleep(0.1)
            assert await (await post(pool, server)).read_all() == b'conn 2: {"n":1}'
            # The retired connection is closed, not just forgotten.
            await server.until(lambda: server.hangups == 1)

    run(scenario())


@on_both_loops
async def test_a_reused_connection_dropped_before_any_byte_is_retried_on_a_fresh_one() -> None:
    async with Server(drop_second_request) as server, open_pool() as pool:
        assert await (await post(pool, server, b'{"n":1}')).read_all() == b'conn 1: {"n":1}'
        assert await (await post(pool, server, b'{"n":2}')).read_all() == b'conn 2: {"n":2}'
        assert server.connections == 2
        # The request reached the server twice: once on the dropped connection, once on the new one.
        assert [body for _, body in server.requests] == [b'{"n":1}', b'{"n":2}', b'{"n":2}']


async def answer_first_only(server: Server, n: int, reader: Reader, writer: Writer) -> None:
    """Answers the very first request; every later request is read and its connection closed unanswered."""
    while (request := await server.read_request(reader)) is not None:
        if len(server.requests) > 1:
            return
        writer.write(reply(b"conn %d: %s" % (n, request[1])))
        await writer.drain()


@on_both_loops
async def test_the_stale_connection_retry_happens_once() -> None:
    async with Server(answer_first_only) as server, open_pool() as pool:
        await (await post(pool, server)).read_all()
        with pytest.raises(UpstreamClosed):
            await post(pool, server)
        assert server.connections == 2
        assert len(server.requests) == 3


@on_both_loops
async def test_a_fresh_connection_dropped_without_an_answer_is_not_retried() -> None:
    async def drop(server: Server, n: int, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)

    async with Server(drop) as server, open_pool() as pool:
        with pytest.raises(UpstreamClosed) as caught:
            await post(pool, server)
        assert isinstance(caught.value, ConnectionResetError)
        assert server.connections == 1


@on_both_loops
async def test_a_connection_that_dies_after_part_of_the_head_is_not_retried() -> None:
    async def half_head(server: Server, n: int, reader: Reader, writer: Writer) -> None:
        while await server.read_request(reader) is not None:
            if len(server.requests) == 1:
                writer.write(reply(b"ok"))
            else:
                # Part of a response reached us: the worker may have done the work, so no silent retry.
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
                await writer.drain()
                return

    async with Server(half_head) as server, open_pool() as pool:
        await (await post(pool, server)).read_all()
        with pytest.raises(UpstreamClosed):
            await post(pool, server)
        assert (server.connections, len(server.requests)) == (1, 2)


@on_both_loops
async def test_connection_refused() -> None:
    async with Server(echo) as server:
        port = server.port
    head = build_head(b"POST", PATH, b"worker", 2)
    async with open_pool() as pool:
        with pytest.raises(UpstreamConnectError) as caught:
            await pool.request(HOST, port, head, b"{}", first_byte_timeout=1.0)
    assert isinstance(caught.value, ConnectionError)
    assert f"{HOST}:{port}" in str(caught.value)


# -- timeouts, death mid-body, garbage -------------------------------------------------------------


async def silent(server: Server, n: int, reader: Reader, writer: Writer) -> None:
    """Reads the request, never answers, and notes when the client hangs up."""
    await server.read_request(reader)
    await server.wait_hangup(reader)


@on_both_loops
async def test_no_head_within_the_limit_times_out_and_drops_the_connection() -> None:
    async with Server(silent) as server, open_pool() as pool:
        with pytest.raises(UpstreamTimeout) as caught:
            await post(pool, server, head_s=0.1)
        assert isinstance(caught.value, TimeoutError)
        # The worker sees the hang-up (vLLM aborts the generation on it).
        await server.until(lambda: server.hangups == 1)


@on_both_loops
async def test_cancelling_the_wait_for_the_head_drops_the_connection() -> None:
    async with Server(silent) as server, open_pool() as pool:
        waiting = asyncio.ensure_future(post(pool, server))
        await server.until(lambda: len(server.requests) == 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await server.until(lambda: server.hangups == 1)


@on_both_loops
async def test_a_stream_that_goes_quiet_times_out_on_read() -> None:
    async def stall(server: Server, n: int, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()
        await server.wait_hangup(reader)

    async with Server(stall) as server, open_pool() as pool:
        response = await post(pool, server)
        response.watch_idle(0.1)
        body, error = await read_until_error(response)
        assert body == b"data: 1\n\n"
        assert isinstance(error, UpstreamTimeout)
        await server.until(lambda: server.hangups == 1)




async def dies_mid_body(sent: bytes, received: bytes) -> None:
    async def die(server: Server, n: int, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(sent)
        await writer.drain()

    async with Server(die) as server, open_pool() as pool:
        response = await post(pool, server)
        body, error = await read_until_error(response)
        assert body == received
        assert isinstance(error, UpstreamClosed)
        assert not response.complete
        # The failure stays: a second read raises it again rather than looking like a clean end.
        with pytest.raises(UpstreamClosed):
            await response.read()


@pytest.mark.parametrize(
    ("sent", "received"),
    [
        (reply(b"0123456789")[:-6], b"0123"),
        (CHUNKED_HEAD + chunk(b"data: 1\n\n") + chunk(b"data: 2\n\n"), b"data: 1\n\ndata: 2\n\n"),
        (CHUNKED_HEAD + chunk(b"data: 1\n\n") + b"9\r\ndata:", b"data: 1\n\ndata:"),
    ],
    ids=["content-length", "chunked-no-last-chunk", "chunked-cut-mid-chunk"],
)
def test_a_server_that_dies_mid_body(sent: bytes, received: bytes, run: Run) -> None:
    run(dies_mid_body(sent, received))


async def malformed_head(garbage: bytes) -> None:
    async def nonsense(server: Server, n: int, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(garbage)
        await writer.drain()
        await server.wait_hangup(reader)

    async with Server(nonsense) as server, open_pool() as pool:
        with pytest.raises(UpstreamProtocolError) as caught:
            await post(pool, server)
        assert isinstance(caught.value, ValueError)
        await server.until(lambda: server.hangups == 1)


@pytest.mark.parametrize(
    "garbage",
    [b"SSH-2.0-OpenSSH_9.6\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"],
    ids=["not-http", "bad-status", "bad-content-length"],
)
def test_a_malformed_head_is_a_protocol_error(garbage: bytes, run: Run) -> None:
    run(malformed_head(garbage))


@on_both_loops
async def test_a_malformed_chunk_is_a_protocol_error_and_the_connection_is_not_reused() -> None:
    async def bad_chunk(server: Server, n: int, reader: Reader, writer: Writer) -> None:
        if n > 1:
            await echo(server, n, reader, writer)
            return
        await server.read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(b"data: 1\n\n") + b"zz\r\nhello\r\n")
        await writer.drain()
        await server.wait_hangup(reader)

    async with Server(bad_chunk) as server, open_pool() as pool:
        response = await post(pool, server)
        body, error = await read_until_error(response)
        assert body == b"data: 1\n\n"
        assert isinstance(error, UpstreamProtocolError)
        await server.until(lambda: server.hangups == 1)
        assert await (await post(pool, server)).read_all() == b'conn 2: {"n":1}'


@on_both_loops
async def test_an_unsolicited_extra_response_does_not_poison_the_pool() -> None:
    async def double(server: Server, n: int, reader: Reader, writer: Writer) -> None:
        if n > 1:
            await echo(server, n, reader, writer)
            return
        # One request, two responses in one write: this connection is out of step with its client.
        request = await server.read_request(reader)
        assert request is not None
        writer.write(reply(b"conn 1: " + request[1]) + reply(b"nobody asked"))
        await writer.drain()
        await echo(server, n, reader, writer)

    async with Server(double) as server, open_pool() as pool:
        assert await (await post(pool, server, b"0")).read_all() == b"conn 1: 0"
        # Two requests at once must each get their own answer, whatever connection they use.
        answers = await asyncio.gather(post(pool, server, b"1", head_s=1.0), post(pool, server, b"2", head_s=1.0))
        bodies = [await response.read_all() for response in answers]
        assert [body.split(b": ")[1] for body in bodies] == [b"1", b"2"]


# -- abandoning a response, backpressure -----------------------------------------------------------


@on_both_loops
async def test_close_mid_body_aborts_the_connection() -> None:
    async def stream(server: Server, n: int, reader: Reader, writer: Writer) -> None:
        if n > 1:
            await echo(server, n, reader, writer)
            return
        await server.read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()
        await server.wait_hangup(reader)

    async with Server(stream) as server, open_pool() as pool:
        response = await post(pool, server)
        assert await response.read() == b"data: 1\n\n"
        response.close()
        await server.until(lambda: server.hangups == 1)
        with pytest.raises(UpstreamClosed):
            await response.read()
        assert not response.complete
        # The abandoned connection is never handed to the next request.
        assert await (await post(pool, server)).read_all() == b'conn 2: {"n":1}'


@on_both_loops
async def test_close_after_the_end_keeps_the_connection() -> None:
    async with Server(echo) as server, open_pool() as pool:
        response = await post(pool, server)
        await response.read_all()
        response.close()
        await (await post(pool, server)).read_all()
        assert server.connections == 1


BIG = 32 * 1024 * 1024


async def firehose(server: Server, n: int, reader: Reader, writer: Writer) -> None:
    """Sends a 32 MiB body as fast as the client lets it (bytes 0..255 repeating, to check order)."""
    await server.read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
    piece = bytes(range(256)) * 256
    while server.sent < BIG:
        writer.write(piece)
        server.sent += len(piece)
        await writer.drain()


@on_both_loops
async def test_a_slow_reader_pauses_the_worker_instead_of_buffering() -> None:
    async with Server(firehose) as server, open_pool() as pool:
        response = await post(pool, server)
        # Nobody reads for a while: the client buffer fills up to its mark, then the socket stops being read.
        await server.until(lambda: response.buffered > 256 * 1024)
        for _ in range(20):
            await asyncio.sleep(0.005)
            assert response.buffered <= BUFFER_BOUND
        # So the kernel's buffers fill and the worker cannot send the rest.
        assert server.sent < BIG
        received = 0
        # The firehose repeats bytes 0-255: a read may start anywhere in it, and its first 16 bytes wrap.
        pattern = bytes(range(256)) * 2
        while data := await response.read():
            assert data[:16] == pattern[received % 256 :][: len(data[:16])]
            received += len(data)
            await asyncio.sleep(0)
            assert response.buffered <= BUFFER_BOUND
        assert received == BIG
        assert response.complete


class Collect:
    """A stream() sink that keeps what it gets; with `pause`, pauses the response on the first flush."""

    def __init__(self, response: UpstreamResponse, *, pause: bool = False) -> None:
        self.response = response
        self.pause = pause
        self.data = bytearray()

    def __call__(self, chunk: bytes) -> None:
        self.data += chunk

    def flush(self) -> None:
        if self.pause:
            self.pause = False
            self.response.pause()


def in_order(data: bytes) -> bool:
    pattern = bytes(range(256)) * (len(data) // 256 + 1)
    return data == pattern[: len(data)]


@on_both_loops
async def test_a_sink_that_pauses_the_stream_stops_the_reads_until_it_resumes() -> None:
    async with Server(firehose) as server, open_pool() as pool:
        response = await post(pool, server)
        sink = Collect(response, pause=True)
        streaming = asyncio.ensure_future(response.stream(sink))
        try:
            await server.until(lambda: bool(sink.data))
            conn = response._conn
            assert conn is not None and conn.transport is not None and not conn.transport.is_reading()
            got = len(sink.data)
            for _ in range(20):
                await asyncio.sleep(0.005)
                assert len(sink.data) == got
            # So the kernel's buffers fill and the worker cannot send the rest.
            assert server.sent < BIG
            response.resume()
            async with asyncio.timeout(WAIT_S):
                await streaming
        finally:
            # On failure, a connection left paused and open would outlive the loop.
            response.close()
        assert len(sink.data) == BIG and in_order(bytes(sink.data))
        assert response.complete


@on_both_loops
async def test_stream_resumes_a_connection_paused_while_nobody_read() -> None:
    async with Server(firehose) as server, open_pool() as pool:
        response = await post(pool, server)
        await server.until(lambda: response.buffered > 256 * 1024)
        conn = response._conn
        assert conn is not None and conn.transport is not None and not conn.transport.is_reading()
        sink = Collect(response)
        try:
            async with asyncio.timeout(WAIT_S):
                await response.stream(sink)
        finally:
            response.close()
        assert len(sink.data) == BIG and in_order(bytes(sink.data))
        assert response.complete


# -- forgetting a worker, closing the pool ---------------------------------------------------------


@on_both_loops
async def test_forget_closes_the_idle_connections_of_that_worker_only() -> None:
    async with Server(echo) as kept, Server(echo) as gone, open_pool() as pool:
        await (await post(pool, kept)).read_all()
        await (await post(pool, gone)).read_all()
        pool.forget(HOST, gone.port)
        await gone.until(lambda: gone.hangups == 1)
        assert await (await post(pool, gone)).read_all() == b'conn 2: {"n":1}'
        # The other worker's idle connection is still there to reuse.
        assert await (await post(pool, kept)).read_all() == b'conn 1: {"n":1}'
        assert kept.hangups == 0
        pool.forget(HOST, 1)  # a worker the pool never talked to


@on_both_loops
async def test_close_drops_every_idle_connection_and_keeps_none_after() -> None:
    async with Server(echo) as one, Server(echo) as two, open_pool() as pool:
        await (await post(pool, one)).read_all()
        await (await post(pool, two)).read_all()
        pool.close()
        await one.until(lambda: one.hangups == 1 and two.hangups == 1)
        # A request finishing after close() does not park its connection in the closed pool.
        assert await (await post(pool, one)).read_all() == b'conn 2: {"n":1}'
        await one.until(lambda: one.hangups == 2)


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


class _Conn:
    def __init__(self) -> None:
        self.transport = _Transport()
        self.response: UpstreamResponse | None = None


@pytest.mark.interpreted_only
@pytest.mark.parametrize(
    ("size", "writes"),
    [(0, 1), (upstream.COPY_BODY_BELOW - 1, 1), (upstream.COPY_BODY_BELOW, 2), (100_000, 2)],
)
def test_a_body_below_the_copy_limit_goes_with_the_head_and_a_larger_one_on_its_own(size: int, writes: int) -> None:
    head, body = build_head(b"POST", PATH, b"worker", size), b"x" * size
    conn = _Conn()

    async def send() -> None:
        upstream.UpstreamPool(connect_timeout=1.0)._send(conn, asyncio.get_running_loop(), head, body)  # type: ignore[arg-type]

    asyncio.run(send())
    assert b"".join(conn.transport.writes) == head + body
    assert len(conn.transport.writes) == writes
    if writes == 2:
        # The large body itself, not a copy of it.
        assert conn.transport.writes[1] is body


def test_build_head() -> None:
    head = build_head(b"POST", b"/v1/embeddings", b"10.0.0.5:8000", 42, b"X-Request-Id: r1\r\n")
    assert head == (
        b"POST /v1/embeddings HTTP/1.1\r\nHost: 10.0.0.5:8000\r\nContent-Type: application/json\r\n"
        b"Content-Length: 42\r\nX-Request-Id: r1\r\n\r\n"
    )
