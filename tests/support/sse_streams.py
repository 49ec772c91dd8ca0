"""Hypothesis strategies for a worker's SSE stream: events of the kinds workers send, each line ended by
LF, CRLF or CR (all three are SSE line ends), the stream cut into reads at arbitrary offsets.

A `Stream` knows what the gateway should make of it: its events as bytes, which of them exist only to
carry usage, and the last usage reported.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import strategies as st

# SSE line ends: https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream
LINE_ENDS = (b"\n", b"\r\n", b"\r")
# Far above one read of a socket (64 KiB): a line longer than any chunk the relay is handed.
HUGE = 70_000


@dataclass(frozen=True)
class Event:
    raw: bytes
    usage: dict[str, Any] | None
    # Exists only to carry usage (no choices): what the gateway strips when it asked for usage itself.
    usage_only: bool
    # Ends with its blank line (False: the stream ended, or was cut, before it).
    complete: bool = True


@dataclass(frozen=True)
class Stream:
    # The last may lack its blank line: a stream that ends without one (or is cut) still has its event.
    events: tuple[Event, ...]

    @property
    def raw(self) -> bytes:
        return b"".join(e.raw for e in self.events)

    @property
    def without_usage_events(self) -> bytes:
        return b"".join(e.raw for e in self.events if not e.usage_only)

    @property
    def usage(self) -> dict[str, Any] | None:
        found = [e.usage for e in self.events if e.usage is not None]
        return found[-1] if found else None


_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
# A comment line's text: anything but a line end.
_LINE = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30)
_USAGE = st.fixed_dictionaries({
    "prompt_tokens": st.integers(0, 10**6), "completion_tokens": st.integers(0, 10**6),
    "total_tokens": st.integers(0, 2 * 10**6),
})


@st.composite
def _payload(draw: st.DrawFn) -> tuple[list[bytes], dict[str, Any] | None, bool]:
    """The lines of one event (without their ends), its usage and whether it is usage-only."""
    kind = draw(st.sampled_from(["token", "token-usage", "usage-only", "ping", "done", "huge", "multi-line"]))
    if kind == "ping":
        return [b": ping " + draw(_LINE).encode()], None, False
    if kind == "done":
        return [b"data: [DONE]"], None, False
    if kind == "multi-line":
        return [b"event: message", b"data: " + orjson.dumps({"choices": [{"delta": {}}]})[:-1], b"data: }"], None, False
    content = "x" * HUGE if kind == "huge" else draw(_TEXT)
    chunk: dict[str, Any] = {"id": "c1", "choices": [] if kind == "usage-only" else
                             [{"index": 0, "delta": {"content": content}}]}
    usage = draw(_USAGE) if kind in ("token-usage", "usage-only") else None
    chunk["usage"] = usage
    spaced = draw(st.booleans())
    # Workers write `"usage":{` (orjson, vLLM) or `"usage": {` (Python's json.dumps).
    data = orjson.dumps(chunk)
    if spaced:
        data = data.replace(b'":', b'": ').replace(b",\"", b", \"")
    return [b"data: " + data], usage, kind == "usage-only"


@st.composite
def events(draw: st.DrawFn, line_ends: tuple[bytes, ...] = LINE_ENDS) -> Event:
    lines, usage, usage_only = draw(_payload())
    raw = b"".join(line + draw(st.sampled_from(line_ends)) for line in lines)
    # The blank line's own end; after a CR, an LF would join it into one CRLF line end.
    blank = draw(st.sampled_from([end for end in line_ends if not (raw.endswith(b"\r") and end == b"\n")]))
    return Event(raw + blank, usage, usage_only)


@st.composite
def streams(draw: st.DrawFn, line_ends: tuple[bytes, ...] = LINE_ENDS) -> Stream:
    listed = draw(st.lists(events(line_ends), max_size=8))
    if listed and draw(st.booleans()):
        last = listed[-1]
        listed[-1] = Event(last.raw.rstrip(b"\r\n"), last.usage, last.usage_only, complete=False)
    return Stream(tuple(listed))


@st.composite
def cuts(draw: st.DrawFn, raw: bytes) -> list[bytes]:
    """`raw` cut into reads at arbitrary offsets (some empty, some a single byte)."""
    offsets = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    bounds = [0, *offsets, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]
