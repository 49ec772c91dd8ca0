"""Server-sent events as bytes: find event boundaries, the usage event, and strip it, without decoding.

The proxy never splits a stream into events on the common path: it forwards what it reads. These
helpers run only where a chunk may hold the usage event (a cheap substring test says so), or at the end
of a stream over its last bytes.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.error_codes import ErrorCode

# A usage object, as vLLM / OpenAI (`"usage":{`) or Python's json.dumps (`"usage": {`) write it.
# `"usage":null`, which OpenAI repeats in every chunk when usage is asked for, matches neither.
USAGE_MARKERS = (b'"usage":{', b'"usage": {')
_DATA = b"data:"
# A line ends with CRLF, LF or CR, and an event with an empty line: two line ends in a row
# (https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream). A CR is a line
# end of its own only when no LF follows: CRLF is one line end, not two.
_LINE_END = rb"(?:\r\n|\r(?!\n)|\n)"
_BLANK_LINE = re.compile(_LINE_END + _LINE_END)
# Buffer ends that close an event whatever comes next: LF after a line end (the common case, vLLM's
# `\n\n`), or CRLF after one.
_CLOSED = (b"\n\n", b"\n\r\n")


def has_usage(chunk: bytes) -> bool:
    return USAGE_MARKERS[0] in chunk or USAGE_MARKERS[1] in chunk


def split_complete(buffer: bytes) -> tuple[bytes, bytes]:
    """(the complete events at the start of `buffer`, the incomplete rest).

    An event ends with a blank line, whatever mix of CRLF, LF and CR ends its lines. A CR at the very
    end is not a boundary yet: the LF that may follow it belongs to the same line end.
    """
    if buffer.endswith(_CLOSED):
        return buffer, b""
    if b"\r" not in buffer:
        # LF line ends only (vLLM, llama.cpp): the last `\n\n`, found without a regex.
        end = buffer.rfind(b"\n\n")
        end = end + 2 if end >= 0 else 0
    else:
        end = _last_boundary(buffer)
    return buffer[:end], buffer[end:]


def _last_boundary(buffer: bytes) -> int:
    """Where the last blank line in `buffer` ends (0: none), tried at each line-end byte from the end."""
    stop = len(buffer)
    while stop > 0:
        at = max(buffer.rfind(b"\n", 0, stop), buffer.rfind(b"\r", 0, stop))
        if at < 0:
            return 0
        end = at + 1
        if end < len(buffer) or buffer[at] != ord("\r"):
            # A blank line is 2 to 4 bytes (CRLF CRLF); matched against the whole buffer, so that a CR
            # followed by an LF is read as one line end.
            for start in range(max(0, end - 4), end - 1):
                match = _BLANK_LINE.match(buffer, start)
                if match is not None and match.end() == end:
                    return end
        stop = at
    return 0


def _events(block: bytes) -> list[bytes]:
    """Events of a block of complete events, each with its own blank line, bytes kept as they were."""
    events = []
    start = 0
    for match in _BLANK_LINE.finditer(block):
        events.append(block[start : match.end()])
        start = match.end()
    if start < len(block):
        events.append(block[start:])
    return events


def event_json(event: bytes) -> Any:
    """The JSON payload of one `data:` event, or None (comments, `[DONE]`, malformed data)."""
    lines = [line[5:].lstrip() for line in event.splitlines() if line.startswith(_DATA)]
    if not lines:
        return None
    payload = b"\n".join(lines)
    if payload.strip() == b"[DONE]":
        return None
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def _usage_of(payload: Any) -> dict[str, Any] | None:
    """The usage object of an event payload (None when absent or null)."""
    if isinstance(payload, dict):
        usage = payload.get("usage")
        if isinstance(usage, dict):
            return usage
    return None


def take_usage(block: bytes, strip: bool) -> tuple[bytes, dict[str, Any] | None]:
    """The usage reported in a block of complete events; with `strip`, the block without the events
    that exist only to carry it (no choices: the chunk `stream_options.include_usage` adds).
    """
    usage = None
    kept: list[bytes] = []
    for event in _events(block):
        payload = event_json(event) if has_usage(event) else None
        found = _usage_of(payload)
        if found is not None:
            usage = found
            if strip and isinstance(payload, dict) and not payload.get("choices"):
                continue
        kept.append(event)
    if not strip:
        return block, usage
    return b"".join(kept), usage


def usage_in_tail(tail: bytes) -> dict[str, Any] | None:
    """The last usage object in the tail of a stream (which may start mid-event)."""
    for at in sorted((tail.rfind(marker) for marker in USAGE_MARKERS), reverse=True):
        if at < 0:
            break
        # The `data:` that starts the line, not one inside the event's text; lines end with LF, CR or both.
        start = max(tail.rfind(b"\n", 0, at), tail.rfind(b"\r", 0, at)) + 1
        if not tail.startswith(_DATA, start):
            continue
        end = min((i for i in (tail.find(b"\n", at), tail.find(b"\r", at)) if i >= 0), default=len(tail))
        payload = _usage_of(event_json(tail[start:end]))
        if payload is not None:
            return payload
    return None


def count_data_events(chunk: bytes) -> int:
    """`data:` lines in a chunk: one per streamed chunk (about one token each on vLLM)."""
    return chunk.count(b"\ndata:") + chunk.startswith(_DATA)


def error_event(message: str, code: ErrorCode) -> bytes:
    """An OpenAI-shaped error event for a cut upstream, with no `[DONE]` after it: `[DONE]` says the
    answer is complete. OpenAI's SDK raises `APIError` on a `data:` event that holds an `error`
    (openai-python, src/openai/_streaming.py, `_raise_streaming_error`)."""
    error = {"error": {"message": message, "type": "upstream_error", "code": code}}
    return b"data: " + orjson.dumps(error) + b"\n\n"
