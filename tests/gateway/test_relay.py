"""gateway.relay: with usage stripping on, the client gets the worker's stream byte for byte minus the
usage-only event, and the usage is found, however the worker's bytes are cut into reads.

The relay's sink is driven as the upstream connection drives it (one call per read, then a flush, then
the end-of-stream step); the client is a recorder whose writes complete at once, so the worker's
connection is never paused. Pausing under backpressure is tested in test_relay_backpressure.py.
"""

from __future__ import annotations

import asyncio
import time

from hypothesis import given
from hypothesis import strategies as st
from sse_streams import Stream, cuts, streams

from gateway import relay


class _Client:
    def __init__(self) -> None:
        self.received = bytearray()

    async def write(self, data: bytes) -> None:
        self.received += data


async def _relayed(reads: list[bytes], strip: bool) -> tuple[bytes, relay.Outcome]:
    client, outcome = _Client(), relay.Outcome()
    # No worker connection: it is only paused while a write to the client waits, and none does here.
    sink = relay._Relay(client, None, outcome, strip, time.monotonic)  # type: ignore[arg-type]
    for read in reads:
        sink(read)
        sink.flush()
    client.received += relay._take_usage(sink, outcome)
    return bytes(client.received), outcome


@given(stream=streams(), data=st.data())
def test_stripping_removes_exactly_the_usage_only_events(stream: Stream, data: st.DataObject) -> None:
    reads = data.draw(cuts(stream.raw))
    received, outcome = asyncio.run(_relayed(reads, strip=True))
    assert received == stream.without_usage_events
    assert outcome.usage == stream.usage


@given(stream=streams(), data=st.data())
def test_without_stripping_the_client_gets_every_byte(stream: Stream, data: st.DataObject) -> None:
    received, _ = asyncio.run(_relayed(data.draw(cuts(stream.raw)), strip=False))
    assert received == stream.raw
