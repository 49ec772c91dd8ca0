"""gateway.relay against a slow client, on real sockets on 127.0.0.1, on asyncio's loop and on uvloop.

The client is a raw socket with a small receive buffer that reads only when told (slow_client.py), so
the relay's writes to it park after a few large events. First the relay's sink on its own, with the
worker's connection stood in for by a recorder of what the relay asks of it: what it holds behind a
parked write and in what order it sends it. Then whole streams, from a raw worker (raw_worker.py) through
the gateway's upstream pool: the worker's connection is paused while the client is full and resumed
when it drains, and a client or worker that goes away mid-stream ends it cleanly.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from aiohttp import web
from event_loops import on_both_loops
from raw_worker import CHUNKED_HEAD, HOST, LAST_CHUNK, Reader, Script, Server, Writer, chunk, open_pool, post
from slow_client import WAIT_S, SlowClient, prepared_response, slow_client

from gateway import relay, sse
from gateway.upstream import UpstreamConnection, UpstreamPool, UpstreamResponse

# Events this large fill the client's buffers after a few, and each write is over aiohttp's 64 KiB
# between checks for backpressure once two reads' worth is queued.
EVENT_BYTES = 32 * 1024
# More than every buffer between the worker and the client holds once the client stops reading.
EVENTS = 64
# A worker that would stream for ever (it is stopped by the test long before).
ENDLESS = 100_000
# Reads from the worker that arrive while a write to the client is parked.
HELD = [b"data: held %d\n\n" % i for i in range(5)]


def event(i: int) -> bytes:
    return b"data: %06d %s\n\n" % (i, b"x" * EVENT_BYTES)


class WorkerConnection:
    """Stands in for the UpstreamResponse: notes what the relay asks of the worker's connection."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")

    def close(self) -> None:
        self.calls.append("close")


async def _relay(request: web.Request, up: UpstreamResponse, outcome: relay.Outcome) -> web.StreamResponse:
    """The worker's stream relayed into a prepared aiohttp response, as the application's route does."""
    response = web.StreamResponse()
    await response.prepare(request)
    await relay.relay_to(response, up, outcome, strip_usage=False, clock=time.monotonic)
    return response


def push(sink: relay.StreamRelay, data: bytes) -> None:
    """One read from the worker, as the upstream connection delivers it."""
    sink(data)
    sink.flush()


def push_until_parked(sink: relay.StreamRelay) -> list[bytes]:
    """Push events until a write to the client parks; the events pushed."""
    sent: list[bytes] = []
    while sink.parked is None:
        assert len(sent) < ENDLESS, "no write to a client that reads nothing ever parked"
        sent.append(event(len(sent)))
        push(sink, sent[-1])
    return sent


@pytest.mark.interpreted_only
@on_both_loops
async def test_reads_held_behind_a_parked_write_go_out_in_order_once_the_client_drains() -> None:
    async with prepared_response() as (client, response):
        worker, outcome = WorkerConnection(), relay.Outcome()
        sink = relay.StreamRelay(response, worker, outcome, False, time.monotonic)  # type: ignore[arg-type]
        sent = push_until_parked(sink)
        assert worker.calls == ["pause"]
        # Reads the worker's connection delivers while the write is parked are held, in arrival order.
        for data in HELD:
            push(sink, data)
        assert sink.backlog == HELD
        reading = asyncio.ensure_future(client.read_body())
        async with asyncio.timeout(WAIT_S):
            await sink.wait_settled()
        assert (sink.parked, sink.backlog, worker.calls) == (None, [], ["pause", "resume"])
        await response.write_eof()
        assert await reading == b"".join(sent + HELD)
        assert outcome.events == len(sent) + len(HELD)


@pytest.mark.interpreted_only
@on_both_loops
async def test_a_client_gone_while_reads_are_held_drops_them_and_closes_the_worker() -> None:
    async with prepared_response() as (client, response):
        worker, outcome = WorkerConnection(), relay.Outcome()
        sink = relay.StreamRelay(response, worker, outcome, False, time.monotonic)  # type: ignore[arg-type]
        push_until_parked(sink)
        push(sink, b"data: held\n\n")
        client.reset()
        async with asyncio.timeout(WAIT_S):
            await sink.wait_settled()
        assert isinstance(sink.failed, ConnectionError)
        assert (sink.parked, sink.backlog, worker.calls) == (None, [], ["pause", "close"])
        # A read still in flight from the worker is dropped, not written to the dead client.
        push(sink, b"data: late\n\n")
        assert (sink.parked, sink.backlog) == (None, [])


class HeldReads(WorkerConnection):
    """An UpstreamResponse whose stream() has its last reads held behind a parked write, then ends."""

    status = 200

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    def header(self, name: bytes) -> bytes | None:
        return None

    async def stream(self, sink: relay.StreamRelay) -> None:
        self.sent = push_until_parked(sink) + HELD
        for data in HELD:
            push(sink, data)


@pytest.mark.interpreted_only
@on_both_loops
async def test_the_response_ends_only_after_the_reads_held_behind_a_parked_write() -> None:
    worker, outcome = HeldReads(), relay.Outcome()

    async def handler(request: web.Request) -> web.StreamResponse:
        return await _relay(request, worker, outcome)  # type: ignore[arg-type]

    async with slow_client(handler) as (client, done):
        body = await client.read_body()
        async with asyncio.timeout(WAIT_S):
            await done
    assert body == b"".join(worker.sent)
    assert (outcome.complete, outcome.client_gone, worker.calls) == (True, False, ["pause", "resume"])


# -- whole streams, from a raw worker through the upstream pool --------------------------------------


def streams(events: int, *, cut: bool = False) -> Script:
    """A worker that streams `events` events as fast as it may, then ends the response (or, with `cut`,
    closes the connection without ending it); counts a connection that broke under it as a hang-up."""

    async def script(server: Server, n: int, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(CHUNKED_HEAD)
        try:
            for i in range(events):
                writer.write(chunk(event(i)))
                server.sent += 1
                await writer.drain()
        except ConnectionError:
            server.hangups += 1
            return
        if not cut:
            writer.write(LAST_CHUNK)
            await writer.drain()
            await server.wait_hangup(reader)

    return script


@dataclass
class Stream:
    """A stream relayed from a raw worker through the upstream pool to a slow client."""

    worker: Server
    pool: UpstreamPool
    client: SlowClient
    # What the gateway's handler returned (or raised).
    done: asyncio.Future[web.StreamResponse]
    outcome: relay.Outcome
    ups: list[UpstreamResponse]

    async def until_paused(self) -> UpstreamConnection:
        """Until the relay paused reading from the worker's connection; that connection."""
        await self.worker.until(lambda: bool(self.ups) and self.ups[0]._conn is not None and self.ups[0]._conn._paused)
        conn = self.ups[0]._conn
        assert conn is not None and conn.transport is not None
        assert not conn.transport.is_reading()
        return conn

    async def ended(self) -> None:
        async with asyncio.timeout(WAIT_S):
            await self.done


@asynccontextmanager
async def relayed(script: Script) -> AsyncIterator[Stream]:
    outcome, ups = relay.Outcome(), []

    async def handler(request: web.Request) -> web.StreamResponse:
        up = await post(pool, worker)
        ups.append(up)
        return await _relay(request, up, outcome)

    async with Server(script) as worker, open_pool() as pool, slow_client(handler) as (client, done):
        try:
            yield Stream(worker, pool, client, done, outcome, ups)
        finally:
            # A test that failed may leave the worker's connection paused and open: close it before the loop.
            for up in ups:
                up.close()


@on_both_loops
async def test_a_parked_write_pauses_the_workers_connection_until_the_client_drains() -> None:
    async with relayed(streams(EVENTS)) as stream:
        conn = await stream.until_paused()
        # The stream can only end if the relay resumes the worker's connection once the client reads.
        body = await stream.client.read_body()
        await stream.ended()
        assert body == b"".join(event(i) for i in range(EVENTS))
        outcome = stream.outcome
        assert (outcome.complete, outcome.events, outcome.client_gone, outcome.upstream_error) == (
            True, EVENTS, False, None,
        )  # fmt: skip
        # The worker's connection went back to the pool, reading again.
        assert conn.transport is not None and conn.transport.is_reading()
        assert stream.pool._idle[(HOST, stream.worker.port)] == deque([conn])


@on_both_loops
async def test_a_client_gone_while_its_write_is_parked_ends_the_stream_and_drops_the_worker() -> None:
    async with relayed(streams(ENDLESS)) as stream:
        conn = await stream.until_paused()
        stream.client.reset()
        await stream.ended()
        outcome = stream.outcome
        assert (outcome.complete, outcome.client_gone, outcome.upstream_error) == (False, True, None)
        # The worker sees the hang-up (vLLM aborts the generation on it), and its connection is not reused.
        await stream.worker.until(lambda: stream.worker.hangups == 1)
        assert conn.closed
        assert not stream.pool._idle.get((HOST, stream.worker.port))


@on_both_loops
async def test_a_worker_cut_while_writes_are_parked_ends_with_an_error_event_after_every_byte() -> None:
    async with relayed(streams(EVENTS, cut=True)) as stream:
        conn = await stream.until_paused()
        body = await stream.client.read_body()
        await stream.ended()
        outcome = stream.outcome
        assert outcome.upstream_error is not None and "closed the connection" in outcome.upstream_error
        assert (outcome.complete, outcome.client_gone, outcome.events) == (False, False, EVENTS)
        error = sse.error_event(f"The worker failed mid-stream: {outcome.upstream_error}", "upstream_error")
        assert body == b"".join(event(i) for i in range(EVENTS)) + error
        assert conn.closed
        assert not stream.pool._idle.get((HOST, stream.worker.port))
