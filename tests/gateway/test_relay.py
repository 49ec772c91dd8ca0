"""gateway.relay: with usage stripping on, the client gets the worker's stream byte for byte minus the
usage-only event, and the usage is found, however the worker's bytes are cut into reads.

`relay_to` is driven as the upstream connection drives it (one call per read, then a flush, until
the response ends); the client is a recorder whose writes complete at once, so the worker's
connection is never paused. Pausing under backpressure is tested in test_relay_backpressure.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sse_streams import Stream, cuts, streams

from gateway import relay
from gateway.upstream import Sink


class _Worker:
    """The upstream side of `relay_to`: pushes each read into the sink, then flushes, as a connection does."""

    status = 200

    def __init__(self, reads: list[bytes]) -> None:
        self.reads = reads

    def header(self, name: bytes) -> bytes | None:
        return None

    async def stream(self, sink: Sink) -> None:
        for read in self.reads:
            sink(read)
            sink.flush()

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def close(self) -> None:
        pass


async def _relayed(reads: list[bytes], strip: bool) -> tuple[bytes, relay.Outcome]:
    received = bytearray()

    class Client:
        """The client's side: every write completes at once, so the worker's connection is never paused."""

        async def write(self, data: bytes) -> None:
            received.extend(data)

        async def write_eof(self) -> None:
            return None

    outcome = relay.Outcome()
    await relay.relay_to(Client(), _Worker(reads), outcome, strip_usage=strip, clock=time.monotonic)  # type: ignore[arg-type]
    return bytes(received), outcome


@pytest.mark.interpreted_only
@given(stream=streams(), data=st.data())
def test_stripping_removes_exactly_the_usage_only_events(stream: Stream, data: st.DataObject) -> None:
    reads = data.draw(cuts(stream.raw))
    received, outcome = asyncio.run(_relayed(reads, strip=True))
    assert received == stream.without_usage_events
    assert outcome.usage == stream.usage


@pytest.mark.interpreted_only
@given(stream=streams(), data=st.data())
def test_without_stripping_the_client_gets_every_byte(stream: Stream, data: st.DataObject) -> None:
    received, _ = asyncio.run(_relayed(data.draw(cuts(stream.raw)), strip=False))
    assert received == stream.raw
