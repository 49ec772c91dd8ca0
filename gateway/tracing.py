"""Tracing a request: its correlation id, the time it spent in each phase, and its access-log line.

The correlation id is the client's `X-Request-Id` when it is sane (1-128 characters of letters, digits
and `._:/+=-`: nothing a header, a log line or a shell could misread), else the gateway's own id
(`own_request_id`: 32 hex digits, in time order). It is
returned in `X-Request-Id`, sent to the worker, stored on the usage row (`correlation_id`) and written
on the request's one access-log line (logger `gateway.access`, `INVENTIV_ACCESS_LOG`), so one id finds
a request in the client's logs, the gateway's, the worker's and the usage table.

Phases (`inventiv_gateway_phase_seconds{phase}`): auth (key lookup), model_resolution, worker_selection
(affinity included), upstream_connect (only when a new connection to the worker was opened),
first_byte (request sent to response head received: the worker's queueing and prefill, or the whole
generation of a JSON answer), total.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from typing import Any, BinaryIO, Protocol

import orjson

access_log = logging.getLogger("gateway.access")
_ACCESS_LOGGER = access_log.name.encode()

MAX_REQUEST_ID_LEN = 128
_SANE = re.compile(rf"[A-Za-z0-9._:/+=-]{{1,{MAX_REQUEST_ID_LEN}}}")

PHASES = ("auth", "model_resolution", "worker_selection", "upstream_connect", "first_byte", "total")


# The random part of the gateway's own ids: a generator of its own, seeded from the system's at import
# and again in a forked child, so that neither a test seeding `random` nor a fork can repeat a sequence.
_id_bits = random.Random()
os.register_at_fork(after_in_child=_id_bits.seed)


def own_request_id() -> str:
    """The gateway's own id of a request, which keys its usage row: 32 hex digits, the milliseconds since
    the epoch (12) then 80 random bits (20), as a UUIDv7's layout (RFC 9562) without its version bits.

    Ids in time order keep the usage table's indexes on them (the primary key, and the correlation id,
    which is this id unless the client sent its own) appending at their right edge, as its indexes on
    `created_at` do. Random ids put each row in a random leaf page of both, and each page is written
    whole to the WAL the first time it changes after a checkpoint. Over a million rows: 100 records
    written alone, 340 against 76 KiB of WAL and 8.5 against 6.9 ms of Postgres's CPU; behind the
    gateway at 200 req/s, 5.3 against 0.86 KB of WAL and 0.21 against 0.10 ms of Postgres's CPU per
    request (benchmarks/RESULTS.md); and once the indexes outgrow memory, a page read per insert.

    Unique, not secret: two ids of one millisecond are the same with a chance of 2^-80, and an id is
    shown to its client anyway. Cheaper than `os.urandom(16).hex()` (no system call).
    """
    return ((time.time_ns() // 1_000_000) << 80 | _id_bits.getrandbits(80)).to_bytes(16, "big").hex()


def client_request_id(value: str | None) -> str | None:
    """The client's X-Request-Id if it is sane enough to echo, store and log; None otherwise."""
    if value is None or not _SANE.fullmatch(value):
        return None
    return value


def enabled() -> bool:
    """Whether the `gateway.access` logger takes INFO lines (callers ask first: building a line costs)."""
    return access_log.isEnabledFor(logging.INFO)


class AccessSink(Protocol):
    def write(self, fields: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...


class LoggedLines:
    """Access lines through the logging module: the key=value format of a terminal, and tests' caplog."""

    def write(self, fields: dict[str, Any]) -> None:
        access_log.info("request", extra=fields)

    def flush(self) -> None:
        return None


class BufferedJsonLines:
    """Access lines in the JSON log format, written to the stream in batches.

    Through the logging module a line cost about 0.1 ms of the gateway's CPU, most of it a LogRecord,
    a strftime and one write per request; here it is one orjson call and an append, and the stream gets
    one write per `FLUSH_S` (or per `MAX_BYTES`). A process killed outright loses at most that batch.

    The batch goes out with the first line written `FLUSH_S` after it began, from the request writing
    it, or else at a timer `SLACK_S` later (no line came), within 0.2 s. A timer alone woke the process
    ten times a second under traffic, a wake-up of an idle process costing more CPU than the write it
    made; a slack as long as the window leaves the timer to traffic under 10 requests a second.
    """

    FLUSH_S = 0.1
    SLACK_S = 0.1
    MAX_BYTES = 64 * 1024

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        # When the batch begun goes out with the next line (time.time() seconds).
        self._flush_at = 0.0
        self._second = -1
        self._stamp = b""

    def write(self, fields: dict[str, Any]) -> None:
        # {"ts": ..., "level": "info", "logger": "gateway.access", "msg": "request", **fields}, written as
        # its bytes: the fixed head formatted once per second, the fields' own JSON object appended to it
        # (rather than a second dict merged and encoded per line).
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        buffer = self._buffer
        buffer += b'{"ts":"%s.%03dZ","level":"info","logger":"%s","msg":"request"' % (
            self._stamp, int((now - second) * 1000), _ACCESS_LOGGER
        )
        encoded = orjson.dumps(fields, default=str)
        if len(encoded) > 2:
            buffer += b","
            buffer += memoryview(encoded)[1:]
        else:
            buffer += b"}"
        buffer += b"\n"
        if self._timer is None:
            self._flush_at = now + self.FLUSH_S
            self._timer = asyncio.get_running_loop().call_later(self.FLUSH_S + self.SLACK_S, self.flush)
        if now >= self._flush_at or len(buffer) >= self.MAX_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            try:
                self._stream.write(data)
                self._stream.flush()
            except (OSError, ValueError):
                # Logging must never fail a request (a closed or full stderr): the lines are lost.
                pass
