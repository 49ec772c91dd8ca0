"""Relaying a worker's response to the client: JSON in one piece, SSE byte for byte as it arrives.

The stream loop does per chunk: one read, one write, two substring tests and one `count`. It decodes
JSON only for the event that carries usage. When the gateway itself turned usage reporting on (the
client did not ask), it forwards whole events only, so that the usage-only event can be dropped even
when the worker's writes split it across reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from gateway import sse
from gateway.upstream import UpstreamClosed, UpstreamResponse, UpstreamTimeout


@dataclass(slots=True)
class Outcome:
    """What the relay saw; the caller turns it into the usage record."""

    usage: dict[str, Any] | None = None
    first_byte_at: float | None = None
    events: int = 0
    # The upstream failed after the response started: the client got an error event instead of the rest.
    upstream_error: str | None = None
    complete: bool = False


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


async def relay_stream(
    request: web.Request,
    up: UpstreamResponse,
    headers: dict[str, str],
    outcome: Outcome,
    *,
    strip_usage: bool,
    clock: Any,
) -> web.StreamResponse:
    response = web.StreamResponse(status=up.status, headers=headers)
    response.content_type = content_type(up, "text/event-stream")
    await response.prepare(request)
    pending = b""
    # The last reads, kept (not copied) to find the usage event at the end of the stream.
    tail: tuple[bytes, bytes, bytes] = (b"", b"", b"")
    try:
        while chunk := await up.read():
            if outcome.first_byte_at is None:
                outcome.first_byte_at = clock()
            outcome.events += sse.count_data_events(chunk)
            if strip_usage:
                block, pending = sse.split_complete(pending + chunk if pending else chunk)
                if block and sse.has_usage(block):
                    block, outcome.usage = sse.take_usage(block, strip=True)
                if block:
                    await response.write(block)
            else:
                tail = (tail[1], tail[2], chunk)
                await response.write(chunk)
        outcome.complete = True
    except (UpstreamClosed, UpstreamTimeout) as exc:
        outcome.upstream_error = str(exc)
    if pending:
        # A last event with no blank line after it (or a cut one): forwarded as the worker sent it.
        if sse.has_usage(pending):
            pending, outcome.usage = sse.take_usage(pending, strip=True)
        await response.write(pending)
    if not strip_usage and outcome.usage is None:
        last = b"".join(tail)
        if sse.has_usage(last):
            outcome.usage = sse.usage_in_tail(last)
    if outcome.upstream_error is not None:
        message = f"The worker failed mid-stream: {outcome.upstream_error}"
        await response.write(sse.error_event(message, "upstream_error"))
    await response.write_eof()
    return response

