"""Server-sent events as bytes: find event boundaries, the usage event, and strip it, without decoding.

The proxy never splits a stream into events on the common path: it forwards what it reads. These
helpers run only where a chunk may hold the usage event (a cheap substring test says so), or at the end
of a stream over its last bytes.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

# A usage object, as vLLM / OpenAI (`"usage":{`) or Python's json.dumps (`"usage": {`) write it.
# `"usage":null`, which OpenAI repeats in every chunk when usage is asked for, matches neither.
USAGE_MARKERS = (b'"usage":{', b'"usage": {')
_DATA = b"data:"
_BLANK_LINE = re.compile(rb"\r\n\r\n|\n\n")


def has_usage(chunk: bytes) -> bool:
    return USAGE_MARKERS[0] in chunk or USAGE_MARKERS[1] in chunk


def split_complete(buffer: bytes) -> tuple[bytes, bytes]:
    """(the complete events at the start of `buffer`, the incomplete rest).

    An event ends with a blank line: `\\n\\n`, or `\\r\\n\\r\\n` from servers that use CRLF.
    """
    end = buffer.rfind(b"\n\n")
    end = end + 2 if end >= 0 else 0
    crlf = buffer.rfind(b"\r\n\r\n")
    if crlf >= 0 and crlf + 4 > end:
        end = crlf + 4
    if end == len(buffer):
        return buffer, b""
    return buffer[:end], buffer[end:]


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
    for marker in USAGE_MARKERS:
        at = tail.rfind(marker)
        if at < 0:
            continue
        # The `data:` that starts the line, not one inside the event's text.
        start = tail.rfind(b"\n", 0, at) + 1
        if not tail.startswith(_DATA, start):
            continue
        end = tail.find(b"\n", at)
        payload = _usage_of(event_json(tail[start : end if end >= 0 else len(tail)]))
        if payload is not None:
            return payload
    return None


def count_data_events(chunk: bytes) -> int:
    """`data:` lines in a chunk: one per streamed chunk (about one token each on vLLM)."""
    return chunk.count(b"\ndata:") + chunk.startswith(_DATA)


def error_event(message: str, code: str) -> bytes:
    """An OpenAI-shaped error event for a cut upstream, with no `[DONE]` after it: `[DONE]` says the
    answer is complete. OpenAI's SDK raises `APIError` on a `data:` event that holds an `error`
    (openai-python, src/openai/_streaming.py, `_raise_streaming_error`)."""
    error = {"error": {"message": message, "type": "upstream_error", "code": code}}
    return b"data: " + orjson.dumps(error) + b"\n\n"
