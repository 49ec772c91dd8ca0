"""gateway.sse: event boundaries, finding and stripping the usage event, counting events, error events."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sse_streams import Stream, cuts, streams

from gateway import sse

USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
USAGE_ONLY = b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n'
# Python's json.dumps spelling, with a space after the colon.
USAGE_ONLY_SPACED = (
    b'data: {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}\n\n'
)
TOKEN = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\n'
FINAL = b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
# A server that reports usage on its last content chunk (llama.cpp, vLLM's continuous usage stats).
TOKEN_WITH_USAGE = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n'
)
DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"


def crlf(block: bytes) -> bytes:
    return block.replace(b"\n", b"\r\n")


@pytest.mark.parametrize(
    ("buffer", "complete", "rest"),
    [
        (b"", b"", b""),
        (b"data: {\"a\":1}", b"", b"data: {\"a\":1}"),
        (b"data: {\"a\":1}\n", b"", b"data: {\"a\":1}\n"),
        (TOKEN, TOKEN, b""),
        (TOKEN + FINAL + DONE, TOKEN + FINAL + DONE, b""),
        (TOKEN + FINAL + b"data: [DO", TOKEN + FINAL, b"data: [DO"),
        (TOKEN + b"data: {\"a\":1}\n", TOKEN, b"data: {\"a\":1}\n"),
        (PING + TOKEN[:10], PING, TOKEN[:10]),
        (crlf(TOKEN), crlf(TOKEN), b""),
        (crlf(TOKEN + FINAL) + b"data: x\r\n", crlf(TOKEN + FINAL), b"data: x\r\n"),
        # Half of a CRLF blank line is not a boundary yet.
        (crlf(TOKEN) + b"data: x\r\n\r", crlf(TOKEN), b"data: x\r\n\r"),
    ],
    ids=[
        "empty", "no-boundary", "one-newline-only", "one-event", "several-events", "partial-last-event",
        "boundary-mid-buffer", "ping-comment", "crlf-one-event", "crlf-partial-last", "crlf-half-blank-line",
    ],
)
def test_split_complete(buffer: bytes, complete: bytes, rest: bytes) -> None:
    assert sse.split_complete(buffer) == (complete, rest)


def test_split_complete_returns_the_same_object_when_all_is_complete() -> None:
    # The relay's common case: a read that ends on a boundary is forwarded without a copy.
    buffer = TOKEN + FINAL
    assert sse.split_complete(buffer)[0] is buffer


@pytest.mark.parametrize(
    ("block", "strip", "forwarded", "usage"),
    [
        (TOKEN + FINAL + USAGE_ONLY + DONE, True, TOKEN + FINAL + DONE, USAGE),
        (TOKEN + FINAL + USAGE_ONLY + DONE, False, TOKEN + FINAL + USAGE_ONLY + DONE, USAGE),
        (USAGE_ONLY_SPACED + DONE, True, DONE, USAGE),
        (USAGE_ONLY, True, b"", USAGE),
        # Usage on a chunk that still carries a choice: the choice must reach the client.
        (TOKEN_WITH_USAGE + DONE, True, TOKEN_WITH_USAGE + DONE, USAGE),
        # `"usage": null` (OpenAI repeats it on every chunk) is no usage, and nothing is removed.
        (TOKEN + TOKEN + DONE, True, TOKEN + TOKEN + DONE, None),
        (PING + TOKEN, True, PING + TOKEN, None),
        # A last event without its blank line (end of stream).
        (TOKEN + USAGE_ONLY.rstrip(b"\n"), True, TOKEN, USAGE),
        (TOKEN + USAGE_ONLY.rstrip(b"\n"), False, TOKEN + USAGE_ONLY.rstrip(b"\n"), USAGE),
        # Malformed JSON next to a usage marker is forwarded untouched.
        (b'data: {"usage":{"prompt_tokens":\n\n', True, b'data: {"usage":{"prompt_tokens":\n\n', None),
    ],
    ids=[
        "strip-usage-only", "keep-when-not-stripping", "spaced-marker", "block-is-only-usage",
        "usage-on-choice-chunk-kept", "usage-null-untouched", "ping-kept", "last-event-no-blank-line",
        "last-event-no-blank-line-not-stripped", "malformed-json",
    ],
)
def test_take_usage(block: bytes, strip: bool, forwarded: bytes, usage: dict[str, Any] | None) -> None:
    assert sse.take_usage(block, strip) == (forwarded, usage)


def test_take_usage_without_strip_returns_the_block_itself() -> None:
    block = TOKEN + USAGE_ONLY + DONE
    assert sse.take_usage(block, False)[0] is block


@pytest.mark.parametrize(
    ("block", "forwarded"),
    [
        (crlf(TOKEN + FINAL + USAGE_ONLY + DONE), crlf(TOKEN + FINAL + DONE)),
        (crlf(USAGE_ONLY + DONE), crlf(DONE)),
        (crlf(TOKEN_WITH_USAGE), crlf(TOKEN_WITH_USAGE)),
    ],
    ids=["strip-among-events", "strip-before-done", "usage-on-choice-chunk"],
)
def test_take_usage_keeps_crlf_events_byte_for_byte(block: bytes, forwarded: bytes) -> None:
    # The client must get the worker's bytes, minus the usage-only event: CRLF line ends stay CRLF.
    assert sse.take_usage(block, True) == (forwarded, USAGE)


def test_take_usage_finds_usage_in_crlf_without_strip() -> None:
    block = crlf(TOKEN + USAGE_ONLY + DONE)
    assert sse.take_usage(block, False) == (block, USAGE)


@pytest.mark.parametrize(
    ("tail", "usage"),
    [
        (TOKEN + FINAL + USAGE_ONLY + DONE, USAGE),
        (USAGE_ONLY_SPACED + DONE, USAGE),
        (crlf(FINAL + USAGE_ONLY + DONE), USAGE),
        # The tail starts in the middle of an earlier event.
        (TOKEN[25:] + USAGE_ONLY + DONE, USAGE),
        (TOKEN[25:] + USAGE_ONLY_SPACED + DONE, USAGE),
        # The usage event is the last thing, without a trailing newline.
        (FINAL + USAGE_ONLY.rstrip(b"\n"), USAGE),
        # The tail starts inside the usage event, after its `data:`: it cannot be decoded.
        (USAGE_ONLY[8:] + DONE, None),
        (TOKEN + FINAL + DONE, None),
        (b"", None),
        (b'data: {"usage":{"prompt_tokens":1\n\n', None),
        # Text that reads `data:` inside the event that carries usage is content, not a new line.
        (
            b'data: {"choices":[{"index":0,"delta":{"content":"see data: below"}}],'
            b'"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n' + DONE,
            USAGE,
        ),
    ],
    ids=[
        "whole-stream", "spaced-marker", "crlf", "starts-mid-event", "starts-mid-event-spaced",
        "no-trailing-newline", "starts-inside-usage-event", "none", "empty", "truncated-usage",
        "data-colon-in-content",
    ],
)
def test_usage_in_tail(tail: bytes, usage: dict[str, Any] | None) -> None:
    assert sse.usage_in_tail(tail) == usage


@pytest.mark.parametrize(
    ("chunk", "count"),
    [
        (b"", 0),
        (TOKEN, 1),
        (TOKEN + FINAL + USAGE_ONLY + DONE, 4),
        (PING, 0),
        (PING + TOKEN + PING, 1),
        (crlf(TOKEN + FINAL), 2),
        # A read that starts mid-event counts only the events that start in it.
        (TOKEN[10:] + FINAL, 1),
        (b"data: a\ndata: b\n\n", 2),
    ],
    ids=["empty", "one", "four", "ping", "pings-around-one", "crlf", "starts-mid-event", "multi-line-event"],
)
def test_count_data_events(chunk: bytes, count: int) -> None:
    assert sse.count_data_events(chunk) == count


def test_error_event_is_one_openai_error_without_done() -> None:
    event = sse.error_event('worker "w1" went away', "upstream_error")
    complete, rest = sse.split_complete(event)
    assert complete == event and rest == b""
    assert b"[DONE]" not in event
    first = event[: -len(b"\n\n")]
    assert first.startswith(b"data: ") and b"\n\n" not in first
    assert orjson.loads(first[len(b"data: ") :]) == {
        "error": {"message": 'worker "w1" went away', "type": "upstream_error", "code": "upstream_error"}
    }
    assert sse.event_json(first + b"\n\n") == orjson.loads(first[6:])


# Properties: any stream of events, any line ends, cut into reads anywhere --------------------------


def _event_ends(stream: Stream) -> set[int]:
    ends, at = {0}, 0
    for event in stream.events:
        at += len(event.raw)
        ends.add(at)
    return ends


@given(stream=streams(), data=st.data())
def test_reads_split_where_the_whole_stream_does(stream: Stream, data: st.DataObject) -> None:
    whole = sse.split_complete(stream.raw)
    pending, forwarded, ends = b"", b"", _event_ends(stream)
    for read in data.draw(cuts(stream.raw)):
        block, pending = sse.split_complete(pending + read)
        forwarded += block
        # A block ends where an event ends, never inside one.
        assert len(forwarded) in ends
    assert (forwarded, pending) == whole
    # Every complete event, but a last one whose blank line ends in CR: an LF may still follow.
    complete = [e.raw for e in stream.events if e.complete]
    if complete and stream.raw.endswith(b"\r"):
        complete.pop()
    assert whole[0] == b"".join(complete)


@given(stream=streams())
def test_take_usage_strips_exactly_the_usage_only_events(stream: Stream) -> None:
    assert sse.take_usage(stream.raw, strip=True) == (stream.without_usage_events, stream.usage)
    assert sse.take_usage(stream.raw, strip=False) == (stream.raw, stream.usage)


@given(stream=streams())
def test_usage_in_tail_finds_the_last_usage(stream: Stream) -> None:
    assert sse.usage_in_tail(stream.raw) == stream.usage
