"""Usage records: one per authenticated request, from the hot path to Postgres without losing any.

Path of a record:
1. `UsageRecorder.record()` (hot path, synchronous): encode it and append to a local buffer
   (`RecordBuffer`: chunks of memory bounded in bytes, INVENTIV_USAGE_BUFFER_MAX_BYTES).
2. The recorder's flusher sends the buffer to the Redis stream `usage:records` a few milliseconds
   later (with the first record recorded 25 ms after the window opened, or at a timer 50 ms after it),
   one `XADD` per chunk of records (one entry, one round trip for many requests), on a
   connection of its own (gateway/stream_append.py). Redis down:
   the records stay in the buffer and are retried, the oldest dropped (counted, logged) once it is
   full; on shutdown the buffer is flushed before the process exits. In durable mode
   (INVENTIV_USAGE_DURABILITY=durable) a request's answer ends only once its record is in the stream
   (`record_durably`).
3. `UsageWriter` (one consumer per gateway process, in the group `usage-writers`) reads batches and
   writes them to `finops.inference_usage` and `instance_request_metrics`, and the keys' `last_used_at`,
   in one statement that is idempotent on request_id, then `XACK`s and `XDEL`s them. Postgres down:
   nothing is acked, the records wait in the stream and are written when it returns. A writer that
   dies leaves its entries pending; another claims them after `claim_idle_ms`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import mmap
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiopg
import orjson
import psycopg2
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from gateway import metrics
from gateway.background import stop_tasks
from gateway.stream_append import StreamAppender
from inventiv.cancellation import being_cancelled
from sql.prepared import PreparedQuery
from sql.queries import queries

log = logging.getLogger(__name__)

# Stream entry field holding JSON records, one per line: a flush's whole chunk in one entry. Packing
# them costs the gateway one command per flush instead of one per record (a redis-py command is packed
# in Python: about 5 % of the gateway's CPU per non-streaming request went to those XADDs).
_RECORDS_FIELD = b"rs"
# The field of an entry holding one record, as gateways before the batched entries wrote it: still read,
# so a rolling upgrade loses nothing that older processes left in the stream.
_RECORD_FIELD = b"r"
# Wait this long after the first record before flushing to Redis: one pipelined round trip then
# carries every record of the window (at 200 req/s, five), where a round trip per request cost more
# CPU than the rest of the request. The flush starts with the first record recorded once the delay is
# over, right after that request's answer is written, or else at a timer `_FLUSH_SLACK_S` later (no
# request ended in between). A timer at the delay itself fired a delay after some request ended:
# under traffic at a steady rate (200 req/s in the benchmark: 25 ms is five requests), at the moment
# another request was ending, whose answer then waited behind the flush; and it woke an idle process
# 40 times a second. The slack is as long as the delay, so that a record ends the window at any rate
# above 40 req/s when they come evenly, and nine windows in ten at 100 req/s when they come at random
# (a Poisson stream: 1 - exp(-100 x 0.025)). At 5 ms of slack the timer ended every window at 50 req/s
# (records 20 ms apart: 0, 20, then 40 ms, past the 30 ms timer), and 37 % of them at 200 req/s at
# random: a gateway at 50 req/s woke 29 times a second for timers, 5.5 with this slack (strace).
# SIGTERM flushes; a process killed outright loses at most one window's records (measured with the
# 25 ms timer: 0 to 8 completed requests per SIGKILL at 300 req/s). Durable mode sends at once instead.
_FLUSH_DELAY_S = 0.025
_FLUSH_SLACK_S = 0.025
# Bytes of records per buffer chunk, which is also one flush's pipeline: about 110 records of 580 bytes,
# large enough that a backlog drains in few round trips, small enough that a dropped chunk (the buffer
# full) loses few records at a time.
_CHUNK_BYTES = 64 * 1024
# Mappings of sent chunks kept for the next chunks rather than unmapped. Mapping a fresh chunk per flush
# cost about 0.1 ms of CPU at low rates (measured at 40 flushes a second on an idle core: 0.06-0.15 ms
# more per flush than reusing one), in page faults on its first page and the munmap after it, 40 times
# a second at 200 req/s. Two cover a flush in flight beside the chunk being filled.
_SPARE_CHUNKS = 2
# At most one log line per this many seconds about records dropped from a full buffer (they are all
# counted in inventiv_gateway_usage_dropped_total): a line per record would flood the logs.
_DROP_LOG_EVERY_S = 10.0
# Durable mode: the longest a request waits for its record to reach Redis before it is answered anyway
# (the record stays buffered, counted as a fallback). A healthy Redis confirms within a millisecond.
_DURABLE_WAIT_S = 1.0
# The longest pause between two tries of a flush to Redis, or of a write to Postgres, that failed: the
# backlog starts draining within a second of the service's return (at 5 s, a measured Redis outage
# took 6 s to drain, 1.4 s for Postgres), for one refused connection a second while it is away.
_RETRY_MAX_S = 1.0
# After a batch smaller than the maximum, the writer waits this long before reading again, so that
# at low rates it writes a few batches a second instead of one per request (each batch costs a few
# Redis and Postgres round trips). Records reach Postgres within about this delay.
_WRITE_INTERVAL_S = 0.5
# The batch INSERT, planned once per connection: planning its five CTEs was 0.6 ms of Postgres's CPU per
# batch, a quarter of a 100-record batch's (0.85 -> 0.35 ms for 5 records, 2.55 -> 1.85 ms for 100).
_INSERT_BATCH = PreparedQuery("inventiv_usage_batch", queries.usage.insert_usage_batch)
# How often the writer reports the stream's length as the usage backlog metric.
_BACKLOG_EVERY_S = 5.0


@dataclass(slots=True)
class UsageRecord:
    request_id: str
    created_at: float  # epoch seconds: time.time() is 40x cheaper than an ISO string on the hot path
    route: str
    model: str
    stream: bool
    api_key_id: str | None = None
    organization_id: str | None = None
    instance_id: str | None = None
    model_id: str | None = None
    # success | client_cancelled | upstream_error | error; incomplete: a stream's record at its start,
    # replaced by its final one (what remains of a stream cut by a crash of the gateway).
    status: str = "error"
    http_status: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    usage_estimated: bool = False
    latency_ms: int | None = None
    ttft_ms: int | None = None
    # The client's X-Request-Id when sane; None: request_id is the correlation id too.
    correlation_id: str | None = None

    def set_usage(self, usage: dict[str, Any] | None, estimated: bool = False) -> None:
        if not usage:
            return
        self.prompt_tokens = _count(usage.get("prompt_tokens"))
        self.completion_tokens = _count(usage.get("completion_tokens"))
        self.total_tokens = _count(usage.get("total_tokens")) or self.prompt_tokens + self.completion_tokens
        self.usage_estimated = estimated


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class _Chunk:
    """Records of one flush batch: their JSON, newline-separated, in one anonymous memory mapping.

    A mapping of its own (not the allocator's heap) goes back to the system whole when closed, and
    only its written pages are resident.
    """

    __slots__ = ("count", "mem", "used", "waiters")

    def __init__(self, mem: mmap.mmap) -> None:
        self.mem = mem
        self.used = 0
        self.count = 0
        # Requests waiting for this chunk to be in the stream (durable mode).
        self.waiters: list[asyncio.Future[bool]] | None = None

    def fits(self, needed: int) -> bool:
        return self.used + needed <= len(self.mem)

    def add(self, data: bytes) -> None:
        end = self.used + len(data)
        self.mem[self.used : end] = data
        self.mem[end] = 0x0A
        self.used = end + 1
        self.count += 1

    def records(self) -> list[bytes]:
        return self.mem[: self.used].split(b"\n")[:-1]

    def payload(self) -> bytes:
        """The chunk's records as one stream entry's value: JSON lines, each ended by a newline."""
        return self.mem[: self.used]

    def settle(self, confirmed: bool) -> None:
        waiters, self.waiters = self.waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(confirmed)


class RecordBuffer:
    """Encoded records waiting for Redis, bounded in bytes: past the bound the oldest chunk is dropped.

    Records are copied into chunks (`_CHUNK_BYTES` each, one flush batch) rather than kept as the bytes
    objects orjson returns: such an object keeps its writer's spare capacity (measured with tracemalloc:
    8 KiB for a usage record of under 600 bytes, orjson 3.13), so a queue of them cost ~8 KB a record,
    and their many small allocations, interleaved with the requests' own, kept the heap from shrinking
    after the queue emptied. A record costs its JSON plus one byte here. A chunk sent or dropped gives its
    mapping back (`release`): up to `_SPARE_CHUNKS` are kept for the next chunks, the rest unmapped.
    """

    __slots__ = ("_chunks", "_open", "_spare", "max_bytes", "records", "size")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._chunks: collections.deque[_Chunk] = collections.deque()
        self._spare: list[mmap.mmap] = []
        # Whether the last chunk still takes records: not once a flush has taken it.
        self._open = False
        self.size = 0
        self.records = 0

    def append(self, data: bytes) -> tuple[_Chunk, int]:
        """Add one record (JSON without newlines); returns its chunk and the records dropped for room."""
        needed = len(data) + 1
        dropped = 0
        while self._chunks and self.size + needed > self.max_bytes:
            dropped += self._drop_oldest()
        if not self._open or not self._chunks[-1].fits(needed):
            if needed <= _CHUNK_BYTES:
                mem = self._spare.pop() if self._spare else mmap.mmap(-1, _CHUNK_BYTES)
            else:
                mem = mmap.mmap(-1, needed)
            self._chunks.append(_Chunk(mem))
            self._open = True
        chunk = self._chunks[-1]
        chunk.add(data)
        self.size += needed
        self.records += 1
        return chunk, dropped

    def take(self) -> _Chunk | None:
        """The oldest chunk, out of the buffer while it is sent; `restore` it if the send failed."""
        if not self._chunks:
            return None
        chunk = self._chunks.popleft()
        if not self._chunks:
            self._open = False
        self.size -= chunk.used
        self.records -= chunk.count
        return chunk

    def restore(self, chunk: _Chunk) -> int:
        """Put a chunk that could not be sent back in front; returns the records dropped for room."""
        self._chunks.appendleft(chunk)
        self.size += chunk.used
        self.records += chunk.count
        dropped = 0
        while self.size > self.max_bytes and len(self._chunks) > 1:
            dropped += self._drop_oldest()
        return dropped

    def release(self, chunk: _Chunk, confirmed: bool) -> None:
        """A taken chunk is done with: its waiters learn whether it reached the stream, and its mapping is
        kept for a later chunk or unmapped."""
        chunk.settle(confirmed)
        if len(chunk.mem) == _CHUNK_BYTES and len(self._spare) < _SPARE_CHUNKS:
            self._spare.append(chunk.mem)
        else:
            chunk.mem.close()

    def _drop_oldest(self) -> int:
        chunk = self._chunks.popleft()
        if not self._chunks:
            self._open = False
        self.size -= chunk.used
        self.records -= chunk.count
        self.release(chunk, False)
        return chunk.count


class UsageRecorder:
    """The hot path's side: buffer locally, flush to the Redis stream in pipelines.

    `durable`: records are sent at once rather than after the flush delay, and `record_durably`
    waits until its record is in the stream; requests finishing together share one pipelined round trip.
    """

    def __init__(
        self, redis: aioredis.Redis, stream: str, *, max_bytes: int = 64 * 1024 * 1024, durable: bool = False,
        flush_delay_s: float = _FLUSH_DELAY_S, flush_slack_s: float = _FLUSH_SLACK_S,
    ) -> None:  # fmt: skip
        self._appender = StreamAppender(redis, stream)
        self._buffer = RecordBuffer(max_bytes)
        self._durable = durable
        self._flush_delay_s = flush_delay_s
        self._flush_slack_s = flush_slack_s
        self._wake = asyncio.Event()
        # While the flusher waits out a window: resolved by the first record once `_flush_at` (monotonic
        # seconds) is past, or by the timer.
        self._due: asyncio.Future[None] | None = None
        self._flush_at = 0.0
        self._task: asyncio.Task[None] | None = None
        # Redis failed the last flush: durable requests do not wait for it (see record_durably).
        self._failing = False
        self._dropped_unlogged = 0
        self._next_drop_log = 0.0

    def record(self, record: UsageRecord) -> None:
        self._add(record)

    async def record_durably(self, record: UsageRecord) -> bool:
        """Record, and wait until the record is in the Redis stream: True once it is, False when Redis
        is failing or slow (the record then stays buffered, as `record` leaves it)."""
        chunk = self._add(record)
        if self._failing:
            metrics.usage_durable("fallback").inc()
            return False
        waiter = asyncio.get_running_loop().create_future()
        if chunk.waiters is None:
            chunk.waiters = []
        chunk.waiters.append(waiter)
        try:
            async with asyncio.timeout(_DURABLE_WAIT_S):
                confirmed = await asyncio.shield(waiter)
        except TimeoutError:
            confirmed = False
        metrics.usage_durable("confirmed" if confirmed else "fallback").inc()
        return confirmed

    def _add(self, record: UsageRecord) -> _Chunk:
        # orjson encodes the dataclass itself, several times faster than dataclasses.asdict + dumps.
        chunk, dropped = self._buffer.append(orjson.dumps(record))
        if dropped:
            self._count_dropped(dropped)
        # The buffered gauges are set by the flusher, at every attempt (two gauge writes per request were
        # 2 % of its CPU); a scrape sees them at most one flush, or one retry while Redis is away, late.
        if not self._wake.is_set():
            self._wake.set()
        elif (due := self._due) is not None and not due.done() and time.monotonic() >= self._flush_at:
            # Not done: the timer may have ended the window already, the flusher not yet run.
            due.set_result(None)
        return chunk

    def _count_dropped(self, dropped: int) -> None:
        metrics.USAGE_DROPPED.inc(dropped)
        self._dropped_unlogged += dropped
        now = time.monotonic()
        if now >= self._next_drop_log:
            self._next_drop_log = now + _DROP_LOG_EVERY_S
            extra = {"dropped": self._dropped_unlogged, "max_bytes": self._buffer.max_bytes}
            log.error("usage buffer full while Redis is unreachable; dropped the oldest records", extra=extra)
            self._dropped_unlogged = 0

    def _report(self) -> None:
        metrics.USAGE_BUFFERED.set(self._buffer.records)
        metrics.USAGE_BUFFERED_BYTES.set(self._buffer.size)

    @property
    def durable(self) -> bool:
        return self._durable

    @property
    def buffered(self) -> int:
        return self._buffer.records

    @property
    def buffered_bytes(self) -> int:
        return self._buffer.size

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-flusher")

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            if self._durable:
                # A turn of the loop only, for the requests finishing together to join the batch.
                await asyncio.sleep(0)
            else:
                await self._window()
            try:
                await self.flush()
                failures = 0
                self._failing = False
            except (RedisError, OSError) as exc:
                if being_cancelled():
                    raise asyncio.CancelledError from exc
                self._failing = True
                failures += 1
                delay = min(_RETRY_MAX_S, 0.1 * 2**failures)
                extra = {"error": str(exc), "buffered": self.buffered, "buffered_bytes": self.buffered_bytes}
                log.warning("usage flush to Redis failed; retrying", extra=extra)
                await asyncio.sleep(delay)
                # What failed is back in the buffer: retried now, not only once another request ends.
                self._wake.set()

    async def _window(self) -> None:
        """Wait until a record comes `flush_delay_s` after now, or `flush_slack_s` longer for none."""
        loop = asyncio.get_running_loop()
        self._flush_at = time.monotonic() + self._flush_delay_s
        self._due = due = loop.create_future()
        timer = loop.call_later(self._flush_delay_s + self._flush_slack_s, _resolve, due)
        try:
            await due
        finally:
            self._due = None
            timer.cancel()

    async def flush(self) -> None:
        """Send everything buffered; on failure what was not confirmed stays buffered, in order."""
        self._wake.clear()
        self._report()
        while (chunk := self._buffer.take()) is not None:
            try:
                await self._appender.xadd(_RECORDS_FIELD, chunk.payload())
            except BaseException:
                # The entry may have been added before the reply was lost: its records are then written
                # once anyway, the writer being idempotent on request_id.
                chunk.settle(False)
                dropped = self._buffer.restore(chunk)
                if dropped:
                    self._count_dropped(dropped)
                self._report()
                raise
            self._buffer.release(chunk, True)
            self._report()

    async def close(self, timeout_s: float = 5.0) -> None:
        if self._task is not None:
            await stop_tasks([self._task])
        try:
            async with asyncio.timeout(timeout_s):
                await self.flush()
        except (RedisError, OSError, TimeoutError):
            log.error("usage records could not be flushed at shutdown", extra={"lost": self.buffered})
        await self._appender.close()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class UsageWriter:
    """The consumer side: stream → Postgres in batches, acked only after the commit."""

    def __init__(
        self,
        redis: aioredis.Redis,
        pool: aiopg.Pool,
        stream: str,
        group: str,
        *,
        consumer: str | None = None,
        batch: int = 32,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
    ) -> None:
        self._redis = redis
        self._pool = pool
        self._stream = stream
        self._group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._batch = batch
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._next_claim = 0.0
        self._next_backlog = 0.0
        # This consumer's pending entries are read back at start and after a failed batch only.
        self._recovering = True

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._stream, self._group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run_forever(self) -> None:
        failures = 0
        while True:
            try:
                await self.ensure_group()
                while True:
                    if await self.step() < self._batch:
                        await asyncio.sleep(_WRITE_INTERVAL_S)
                    failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if being_cancelled():
                    raise asyncio.CancelledError from exc
                self._recovering = True
                failures += 1
                delay = min(_RETRY_MAX_S, 0.2 * 2**failures)
                log.warning("usage writer failed; records wait in the stream", extra={"error": repr(exc)})
                await asyncio.sleep(delay)

    async def step(self, block: bool = True) -> int:
        """Write one batch: this consumer's pending entries first, then idle ones of dead consumers,
        then new ones. Returns the number of entries handled."""
        entries = []
        if self._recovering:
            entries = await self._read("0", block_ms=None)
            self._recovering = bool(entries)
        if not entries:
            entries = await self._claim()
        if not entries:
            entries = await self._read(">", block_ms=self._block_ms if block else None)
        if entries:
            await self._write(entries)
        await self._report_backlog()
        return len(entries)

    async def _read(self, start: str, block_ms: int | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        reply: Any = await self._redis.xreadgroup(
            self._group, self.consumer, {self._stream: start}, count=self._batch, block=block_ms
        )
        if not reply:
            return []
        # An entry deleted while still pending comes back with no fields: acked like a malformed one.
        return [(entry_id, fields or {}) for entry_id, fields in reply[0][1]]

    async def _claim(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        now = asyncio.get_running_loop().time()
        if now < self._next_claim:
            return []
        self._next_claim = now + self._claim_idle_ms / 1000 / 2
        reply: Any = await self._redis.xautoclaim(
            self._stream, self._group, self.consumer, min_idle_time=self._claim_idle_ms, count=self._batch
        )
        return [(entry_id, fields or {}) for entry_id, fields in reply[1]]

    async def _write(self, entries: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> None:
        lines = [line for _, fields in entries for line in entry_lines(fields)]
        if lines:
            async with self._pool.acquire() as conn:
                # The records go to Postgres as the JSON the recorders wrote, joined into one array
                # unparsed: decoding and re-encoding them here was most of a batch's CPU, a stall of a
                # few milliseconds for the requests behind it. Postgres refusing the array (a line that
                # is not JSON, or not of the record's types) sends the batch the slow way, record by
                # record, so that what cannot be read is logged and skipped, not retried forever.
                try:
                    await _INSERT_BATCH.value(conn, records=(b"[%s]" % b",".join(lines)).decode())
                except psycopg2.DataError:
                    records = [r for entry_id, fields in entries for r in entry_records(entry_id, fields)]
                    await _INSERT_BATCH.value(conn, records=orjson.dumps(records).decode())
        ids = [entry_id for entry_id, _ in entries]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(self._stream, self._group, *ids)
            pipe.xdel(self._stream, *ids)
            await pipe.execute()

    async def _report_backlog(self) -> None:
        now = asyncio.get_running_loop().time()
        if now >= self._next_backlog:
            self._next_backlog = now + _BACKLOG_EVERY_S
            metrics.USAGE_BACKLOG.set(await self._redis.xlen(self._stream))


def entry_lines(fields: dict[bytes, bytes]) -> list[bytes]:
    """The records of one stream entry as their JSON, unparsed: a batch (`rs`, JSON lines, each ended
    by a newline) or one record (`r`). An entry with neither (deleted while pending) has none."""
    if _RECORDS_FIELD in fields:
        return [line for line in fields[_RECORDS_FIELD].split(b"\n") if line]
    record = fields.get(_RECORD_FIELD)
    return [record] if record else []


def entry_records(entry_id: bytes, fields: dict[bytes, bytes]) -> list[dict[str, Any]]:
    """The usage records of one stream entry, parsed (the writer's way for a batch Postgres refused).

    What cannot be read is kept out of the batch (it would fail every retry) and logged in full; the
    entry is acked with the rest."""
    records = []
    for line in entry_lines(fields):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            log.error("malformed usage entry skipped", extra={"entry": entry_id, "record": repr(line)})
    return records
