"""Usage records: exactly one per request, in Postgres, none lost or counted twice, even across outages."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import aiopg
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from fleet import SMALL, WorkerFactory, insert_ready_instance, new_key
from prometheus_client import REGISTRY
from redis.exceptions import RedisError
from tcp_proxy import TcpProxy, via_proxy
from waiting import wait_until

from gateway import usage_recorder
from gateway.stream_append import StreamAppender
from gateway.usage_recorder import RecordBuffer, UsageRecord, UsageRecorder, UsageWriter, entry_records
from inventiv import redis_keys
from inventiv.settings import Settings
from sql.api_key_store import SHOWN_PREFIX_LEN

Gateway = Callable[..., Awaitable[TestClient]]
CHAT = "/v1/chat/completions"
# Final records: a stream's opened one (status incomplete) is in Postgres while it runs.
FINAL = "SELECT count(*) FROM finops.inference_usage WHERE status <> 'incomplete'"
MESSAGES = [{"role": "user", "content": "one two three"}]


async def scalar(pool: aiopg.Pool, sql: str, *args: Any) -> Any:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(sql, args)
        row = await cur.fetchone()
    return row[0] if row else None


async def wait_for(pool: aiopg.Pool, sql: str, expected: Any, timeout_s: float = 15.0) -> Any:
    """The value of `sql` once it is `expected`."""

    async def reached() -> Any:
        value = await scalar(pool, sql)
        assert value == expected, f"{sql} gave {value!r}"
        return True

    await wait_until(reached, timeout_s=timeout_s, what=f"the query to give {expected!r}")
    return expected


def _record(request_id: str, instance_id: str | None, **fields: Any) -> UsageRecord:
    return UsageRecord(
        request_id=request_id, created_at=time.time(), route=CHAT, model=SMALL, stream=False,
        instance_id=instance_id, status="success", http_status=200, **fields,
    )  # fmt: skip


async def test_every_request_is_recorded_once_with_its_tokens(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool
) -> None:
    worker = await start_worker(tokens=4)
    instance = await insert_ready_instance(db_pool, SMALL, "127.0.0.1", worker.port or 0)
    key = await new_key(db_pool)
    client = await start_gateway()
    headers = {"Authorization": f"Bearer {key}"}
    async with client.post(CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=headers) as resp:
        assert resp.status == 200
    stream = {"model": SMALL, "messages": MESSAGES, "stream": True}
    async with client.post(CHAT, json=stream, headers=headers) as resp:
        await resp.read()
    async with client.post(CHAT, json={"model": "nope", "messages": MESSAGES}, headers=headers) as resp:
        assert resp.status == 404
    assert await wait_for(db_pool, FINAL, 3) == 3
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "SELECT stream, status, http_status, prompt_tokens, completion_tokens, total_tokens, instance_id,"
            " usage_estimated FROM finops.inference_usage ORDER BY created_at"
        )
        rows = await cur.fetchall()
        await cur.execute("SELECT total_requests, successful_requests, completion_tokens FROM instance_request_metrics")
        metrics = await cur.fetchall()
        await cur.execute("SELECT count(*) FROM api_keys WHERE last_used_at IS NOT NULL")
        touched = (await cur.fetchone())[0]
    assert rows == [
        (False, "success", 200, 3, 4, 7, instance, False),
        (True, "success", 200, 3, 4, 7, instance, False),
        (False, "error", 404, 0, 0, 0, None, False),
    ]
    assert metrics == [(2, 2, 8)]
    assert touched == 1


async def test_a_cut_stream_counts_what_was_streamed_as_an_estimate(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool
) -> None:
    worker = await start_worker(tokens=10)
    await insert_ready_instance(db_pool, SMALL, "127.0.0.1", worker.port or 0)
    key = await new_key(db_pool)
    client = await start_gateway()
    body = {"model": SMALL, "messages": MESSAGES, "stream": True, "mock": {"abort_after": 4}}
    async with client.post(CHAT, json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        await resp.read()
    await wait_for(db_pool, FINAL, 1)
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT status, completion_tokens, usage_estimated FROM finops.inference_usage")
        assert await cur.fetchall() == [("upstream_error", 4, True)]


async def test_writer_is_idempotent_on_request_id(
    db_pool: aiopg.Pool, redis: aioredis.Redis, settings: Settings
) -> None:
    instance = await insert_ready_instance(db_pool, SMALL, "127.0.0.1", 9)
    stream = redis_keys.key(settings, redis_keys.USAGE_STREAM)
    group = redis_keys.key(settings, redis_keys.USAGE_GROUP)
    records = [_record("r-1", instance, prompt_tokens=2, completion_tokens=3), _record("r-2", instance)]
    # The same records delivered twice: e.g. a writer that died between COMMIT and XACK.
    for record in [*records, *records]:
        await redis.xadd(stream, {b"r": orjson.dumps(asdict(record))})
    writer = UsageWriter(redis, db_pool, stream, group, consumer="c1", block_ms=10)
    await writer.ensure_group()
    assert await writer.step(block=False) == 4
    assert await scalar(db_pool, "SELECT count(*) FROM finops.inference_usage") == 2
    assert await scalar(db_pool, "SELECT total_requests FROM instance_request_metrics") == 2
    assert await scalar(db_pool, "SELECT completion_tokens FROM instance_request_metrics") == 3
    assert await redis.xlen(stream) == 0


async def test_a_dead_writers_pending_records_are_claimed(
    db_pool: aiopg.Pool, redis: aioredis.Redis, settings: Settings
) -> None:
    stream = redis_keys.key(settings, redis_keys.USAGE_STREAM)
    group = redis_keys.key(settings, redis_keys.USAGE_GROUP)
    await redis.xadd(stream, {b"r": orjson.dumps(asdict(_record("r-9", None)))})
    dead = UsageWriter(redis, db_pool, stream, group, consumer="dead", claim_idle_ms=1)
    await dead.ensure_group()
    # The dead consumer read the entry and never acked it.
    await redis.xreadgroup(group, "dead", {stream: ">"}, count=10)
    alive = UsageWriter(redis, db_pool, stream, group, consumer="alive", block_ms=10, claim_idle_ms=1)
    await asyncio.sleep(0.01)
    assert await alive.step(block=False) == 1
    assert await scalar(db_pool, "SELECT count(*) FROM finops.inference_usage") == 1


async def test_recorder_keeps_records_while_redis_is_down(redis: aioredis.Redis, settings: Settings) -> None:
    down = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    stream = redis_keys.key(settings, redis_keys.USAGE_STREAM)
    recorder = UsageRecorder(down, stream)
    recorder.record(_record("r-1", None))
    recorder.record(_record("r-2", None))
    with pytest.raises(RedisError):
        await recorder.flush()
    assert recorder.buffered == 2
    # Redis is back (the same buffer, a client that reaches it): everything goes, in order.
    recorder._appender = StreamAppender(redis, stream)
    await recorder.flush()
    entries = await redis.xrange(stream)
    assert [r["request_id"] for entry_id, fields in entries for r in entry_records(entry_id, fields)] == ["r-1", "r-2"]
    await recorder.close()
    await down.aclose()


async def test_a_failed_flush_is_retried_without_waiting_for_another_record(
    redis: aioredis.Redis, settings: Settings
) -> None:
    """The last records before traffic stops, whose flush failed, still reach Redis once it is back."""
    down = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    stream = redis_keys.key(settings, redis_keys.USAGE_STREAM)
    recorder = UsageRecorder(down, stream)
    recorder.start()
    recorder.record(_record("r-last", None))
    await wait_until(lambda: recorder._failing, timeout_s=5, what="a failed flush")
    recorder._appender = StreamAppender(redis, stream)  # Redis is back; no other request comes
    assert await _streamed(redis, stream) == ["r-last"]
    await recorder.close()
    await down.aclose()


def _flushing(
    redis: aioredis.Redis, settings: Settings, *, delay_s: float, slack_s: float
) -> tuple[UsageRecorder, str]:
    """A recorder whose flusher runs, with these delays; and its stream."""
    stream = redis_keys.key(settings, redis_keys.USAGE_STREAM)
    recorder = UsageRecorder(redis, stream, flush_delay_s=delay_s, flush_slack_s=slack_s)
    recorder.start()
    return recorder, stream


async def _streamed(redis: aioredis.Redis, stream: str) -> list[str]:
    """The request ids in the stream, once there are any."""
    entries = await wait_until(lambda: redis.xrange(stream), timeout_s=5, what="records in the stream")
    return [r["request_id"] for entry_id, fields in entries for r in entry_records(entry_id, fields)]


async def test_the_first_record_after_the_delay_starts_the_flush_without_waiting_for_the_timer(
    redis: aioredis.Redis, settings: Settings
) -> None:
    recorder, stream = _flushing(redis, settings, delay_s=0.02, slack_s=30.0)
    recorder.record(_record("r-1", None))
    await asyncio.sleep(0.05)
    assert await redis.xlen(stream) == 0, "nothing goes before a record comes past the delay (or the timer)"
    recorder.record(_record("r-2", None))
    assert await _streamed(redis, stream) == ["r-1", "r-2"]
    await recorder.close()


async def test_a_record_between_the_timer_and_the_flush_joins_the_flush(
    redis: aioredis.Redis, settings: Settings
) -> None:
    recorder, stream = _flushing(redis, settings, delay_s=0.0, slack_s=30.0)
    recorder.record(_record("r-1", None))
    await wait_until(lambda: recorder._due is not None, timeout_s=5, what="the flusher waiting out the window")
    assert recorder._due is not None
    recorder._due.set_result(None)  # the timer's turn: the window is over, the flusher not yet resumed
    recorder.record(_record("r-2", None))
    assert await _streamed(redis, stream) == ["r-1", "r-2"]
    await recorder.close()


async def test_the_timer_flushes_a_window_no_later_record_came_to_end(
    redis: aioredis.Redis, settings: Settings
) -> None:
    recorder, stream = _flushing(redis, settings, delay_s=0.02, slack_s=0.05)
    started = time.monotonic()
    recorder.record(_record("r-last", None))
    await asyncio.sleep(0.01)
    assert await redis.xlen(stream) == 0
    assert await _streamed(redis, stream) == ["r-last"]
    assert time.monotonic() - started >= 0.07, "not before the delay and the slack"
    await recorder.close()


async def test_a_flush_sends_its_records_as_one_entry(redis: aioredis.Redis, settings: Settings) -> None:
    stream = redis_keys.key(settings, redis_keys.USAGE_STREAM)
    recorder = UsageRecorder(redis, stream)
    for i in range(50):
        recorder.record(_record(f"r-{i}", None))
    await recorder.flush()
    [(entry_id, fields)] = await redis.xrange(stream)
    assert [r["request_id"] for r in entry_records(entry_id, fields)] == [f"r-{i}" for i in range(50)]
    assert recorder.buffered == 0
    await recorder.close()


async def test_a_batch_entry_and_a_single_record_entry_are_both_written(
    db_pool: aiopg.Pool, redis: aioredis.Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry of the batched format (JSON lines) beside one left by an older gateway (one record): both
    reach Postgres; an unreadable line of a batch is skipped and logged, the rest of its batch written."""
    stream = redis_keys.key(settings, redis_keys.USAGE_STREAM)
    group = redis_keys.key(settings, redis_keys.USAGE_GROUP)
    batch = b"".join(orjson.dumps(asdict(_record(f"b-{i}", None))) + b"\n" for i in range(3))
    await redis.xadd(stream, {b"rs": batch + b"{not json\n"})
    await redis.xadd(stream, {b"r": orjson.dumps(asdict(_record("old-1", None)))})
    writer = UsageWriter(redis, db_pool, stream, group, consumer="c1", block_ms=10)
    await writer.ensure_group()
    assert await writer.step(block=False) == 2
    assert await scalar(db_pool, "SELECT count(*) FROM finops.inference_usage") == 4
    assert "malformed usage entry skipped" in caplog.text
    assert await redis.xlen(stream) == 0


async def test_a_readable_batch_goes_to_postgres_unparsed(
    db_pool: aiopg.Pool, redis: aioredis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records' JSON goes to Postgres as the recorders wrote it: the writer parses a batch only
    when Postgres refuses it (a stall of milliseconds per batch for the requests behind it)."""
    stream = redis_keys.key(settings, redis_keys.USAGE_STREAM)
    group = redis_keys.key(settings, redis_keys.USAGE_GROUP)
    batch = b"".join(orjson.dumps(_record(f"u-{i}", None)) + b"\n" for i in range(5))
    await redis.xadd(stream, {b"rs": batch})
    await redis.xadd(stream, {b"r": orjson.dumps(_record("old-1", None))})

    def parsed(*_: object) -> None:
        raise AssertionError("a readable batch was parsed")

    monkeypatch.setattr(usage_recorder, "entry_records", parsed)
    writer = UsageWriter(redis, db_pool, stream, group, consumer="c1", block_ms=10)
    await writer.ensure_group()
    assert await writer.step(block=False) == 2
    assert await scalar(db_pool, "SELECT count(*) FROM finops.inference_usage") == 6
    assert await redis.xlen(stream) == 0


async def test_the_writer_touches_the_keys_of_its_records_and_no_key_named_in_their_text(
    db_pool: aiopg.Pool, redis: aioredis.Redis, settings: Settings
) -> None:
    """The keys touched are the records' `api_key_id`s: a client's model name spelling out another
    key's id (`"api_key_id":"<uuid>"`) is a string there, and touches nothing."""
    used, other = await new_key(db_pool), await new_key(db_pool, "other-org")
    ids = {}
    for key in (used, other):
        ids[key] = str(await scalar(db_pool, "SELECT id FROM api_keys WHERE key_prefix = %s", key[:SHOWN_PREFIX_LEN]))
    stream = redis_keys.key(settings, redis_keys.USAGE_STREAM)
    group = redis_keys.key(settings, redis_keys.USAGE_GROUP)
    tricky = _record("u-1", None, api_key_id=ids[used])
    tricky.model = f'"api_key_id":"{ids[other]}"'
    await redis.xadd(stream, {b"rs": orjson.dumps(tricky) + b"\n"})
    writer = UsageWriter(redis, db_pool, stream, group, consumer="c1", block_ms=10)
    await writer.ensure_group()
    assert await writer.step(block=False) == 1
    touched = "SELECT id::text FROM api_keys WHERE last_used_at IS NOT NULL"
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(touched)
        assert [row[0] for row in await cur.fetchall()] == [ids[used]]
    assert await scalar(db_pool, "SELECT model FROM finops.inference_usage") == tricky.model


async def test_postgres_outage_mid_run_loses_and_duplicates_nothing(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool, database_url: str
) -> None:
    worker = await start_worker(tokens=2)
    instance = await insert_ready_instance(db_pool, SMALL, "127.0.0.1", worker.port or 0)
    key = await new_key(db_pool)
    proxy = await TcpProxy.to_postgres(database_url).start()
    client = await start_gateway(database_url=via_proxy(database_url, proxy.port))
    headers = {"Authorization": f"Bearer {key}"}

    async def burst(n: int) -> None:
        for _ in range(n):
            async with client.post(CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=headers) as resp:
                assert resp.status == 200

    try:
        await burst(20)
        assert await wait_for(db_pool, "SELECT count(*) FROM finops.inference_usage", 20) == 20
        proxy.cut()
        # Postgres is unreachable for the gateway: requests are still served from memory...
        await burst(30)
        await asyncio.sleep(0.5)
        # ...and their records wait in Redis.
        assert await scalar(db_pool, "SELECT count(*) FROM finops.inference_usage") == 20
        proxy.restore()
        assert await wait_for(db_pool, "SELECT count(*) FROM finops.inference_usage", 50, timeout_s=30) == 50
        total = await scalar(
            db_pool, "SELECT total_requests FROM instance_request_metrics WHERE instance_id = %s", instance
        )
        assert total == 50
    finally:
        await proxy.close()


# -- the local buffer -----------------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@pytest.mark.parametrize(
    ("max_bytes", "sizes", "kept", "dropped"),
    [
        (1000, [99] * 10, 10, 0),  # exactly full: 10 x (99 + separator)
        (1000, [99] * 11, 1, 10),  # the bound drops whole chunks: here the only one
        (200_000, [999] * 300, 170, 130),  # 65 records a chunk: the two oldest go, 65 + 65 + 40 are kept
    ],
)
def test_buffer_is_bounded_in_bytes_dropping_the_oldest(
    max_bytes: int, sizes: list[int], kept: int, dropped: int
) -> None:
    buffer = RecordBuffer(max_bytes)
    total = 0
    for i, size in enumerate(sizes):
        total += buffer.append(str(i % 10).encode() * size)[1]
    assert (buffer.records, total) == (kept, dropped)
    sent = []
    while (chunk := buffer.take()) is not None:
        sent += chunk.records()
        buffer.release(chunk, True)
    assert len(sent) == kept and buffer.size == 0 and buffer.records == 0
    assert sent[-1] == str((len(sizes) - 1) % 10).encode() * sizes[-1]


def test_a_chunk_that_failed_goes_back_in_front() -> None:
    buffer = RecordBuffer(1 << 20)
    buffer.append(b"a")
    chunk = buffer.take()
    assert chunk is not None
    buffer.append(b"b")
    assert buffer.restore(chunk) == 0
    order = []
    while (taken := buffer.take()) is not None:
        order += taken.records()
    assert order == [b"a", b"b"]


def test_a_sent_chunk_s_memory_holds_the_next_chunks_and_no_more_than_two_are_kept() -> None:
    buffer = RecordBuffer(1 << 30)
    chunks = []
    for _ in range(3):
        chunk, _ = buffer.append(b"x" * 40_000)
        assert buffer.take() is chunk
        chunks.append(chunk)
    maps = [chunk.mem for chunk in chunks]
    for chunk in chunks:
        buffer.release(chunk, True)
    assert [m.closed for m in maps] == [False, False, True], "two mappings kept, the third unmapped"
    first, _ = buffer.append(b"new")
    assert first.mem is maps[1] and first.records() == [b"new"], "the last kept is used first, from its start"
    assert buffer.take() is first
    second, _ = buffer.append(b"y" * 100)
    assert second.mem is maps[0] and second.records() == [b"y" * 100]
    assert buffer.take() is second
    huge, _ = buffer.append(b"h" * 100_000)
    assert len(huge.mem) == 100_000 + 1 and huge.mem not in maps
    assert buffer.take() is huge
    buffer.release(huge, True)
    assert huge.mem.closed, "a mapping of another size is not kept"


def test_a_dropped_chunk_settles_its_waiters_as_lost_and_gives_its_memory_back() -> None:
    buffer = RecordBuffer(100_000)
    oldest, _ = buffer.append(b"a" * 60_000)
    loop = asyncio.new_event_loop()
    try:
        waiter = loop.create_future()
        oldest.waiters = [waiter]
        newer, dropped = buffer.append(b"b" * 60_000)
        assert dropped == 1 and waiter.result() is False
        assert newer.mem is oldest.mem, "the dropped chunk's mapping holds the next one"
    finally:
        loop.close()


def _big_record(request_id: str) -> UsageRecord:
    return _record(request_id, "7f1c1a35-3c1b-4a8e-9f7e-0c8b8f1f2d3e", correlation_id="c" * 32, ttft_ms=12)


async def test_a_buffered_record_costs_its_size_and_is_given_back(redis: aioredis.Redis, settings: Settings) -> None:
    down = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    stream = redis_keys.key(settings, redis_keys.USAGE_STREAM)
    recorder = UsageRecorder(down, stream)
    gc.collect()
    before = _rss()
    count = 20_000
    for i in range(count):
        recorder.record(_big_record(f"r-{i}"))
    gc.collect()
    during = _rss()
    size = recorder.buffered_bytes
    # The JSON itself (~450 B here) and its separator; 8 KB a record before chunks (orjson's buffers).
    assert size / count < 600
    assert during - before < 2 * size
    with pytest.raises(RedisError):
        await recorder.flush()
    # The gauges are set by each flush attempt: this one failed and everything is still buffered.
    assert _sample("inventiv_gateway_usage_buffered") == count
    assert _sample("inventiv_gateway_usage_buffered_bytes") == size
    recorder._appender = StreamAppender(redis, stream)
    await recorder.flush()
    gc.collect()
    assert _rss() < during - size // 2
    assert _sample("inventiv_gateway_usage_buffered") == 0
    # One entry per chunk of records, every record in one of them.
    entries = await redis.xrange(stream)
    assert sum(len(entry_records(i, fields)) for i, fields in entries) == count
    assert len(entries) < count / 50
    await recorder.close()
    await down.aclose()


async def test_a_full_buffer_drops_the_oldest_counted_and_logged_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    down = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    recorder = UsageRecorder(down, redis_keys.key(settings, redis_keys.USAGE_STREAM), max_bytes=256 * 1024)
    dropped_before = _sample("inventiv_gateway_usage_dropped_total")
    for i in range(3000):
        recorder.record(_big_record(f"r-{i}"))
    dropped = _sample("inventiv_gateway_usage_dropped_total") - dropped_before
    assert recorder.buffered_bytes <= 256 * 1024
    assert dropped == 3000 - recorder.buffered > 0
    assert len([r for r in caplog.records if "usage buffer full" in r.getMessage()]) == 1
    await down.aclose()


# -- a stream's opened record -------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["same_batch", "opened_first", "final_first"])
async def test_a_streams_final_record_replaces_its_opened_one_never_the_reverse(
    db_pool: aiopg.Pool, redis: aioredis.Redis, settings: Settings, order: str
) -> None:
    instance = await insert_ready_instance(db_pool, SMALL, "127.0.0.1", 9)
    stream = redis_keys.key(settings, redis_keys.USAGE_STREAM)
    group = redis_keys.key(settings, redis_keys.USAGE_GROUP)
    opened = asdict(_record("s-1", instance, prompt_tokens=5, usage_estimated=True)) | {"status": "incomplete"}
    final = _record("s-1", instance, prompt_tokens=3, completion_tokens=4)
    writer = UsageWriter(redis, db_pool, stream, group, consumer="c1", block_ms=10)
    await writer.ensure_group()
    batches = {"same_batch": [[opened, final]], "opened_first": [[opened], [final]], "final_first": [[final], [opened]]}
    for batch in batches[order]:
        for record in batch:
            await redis.xadd(stream, {b"r": orjson.dumps(record)})
        await writer.step(block=False)
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT status, prompt_tokens, completion_tokens, usage_estimated"
                          " FROM finops.inference_usage")
        assert await cur.fetchall() == [("success", 3, 4, False)]
    assert await scalar(db_pool, "SELECT total_requests FROM instance_request_metrics") == 1


async def test_a_stream_is_in_postgres_from_its_start_with_its_prompt_estimated(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool
) -> None:
    worker = await start_worker(tokens=40, token_delay_ms=50)
    await insert_ready_instance(db_pool, SMALL, "127.0.0.1", worker.port or 0)
    key = await new_key(db_pool)
    client = await start_gateway()
    body = {"model": SMALL, "messages": MESSAGES, "stream": True}
    async with client.post(CHAT, json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        # While the stream runs (2 s): what a crash of the gateway now would leave.
        row = await wait_for(
            db_pool, "SELECT status || ' ' || usage_estimated || ' ' || (prompt_tokens > 0)"
            " FROM finops.inference_usage", "incomplete true true",
        )  # fmt: skip
        assert row == "incomplete true true"
        await resp.read()
    final = "SELECT status || ' ' || completion_tokens FROM finops.inference_usage"
    assert await wait_for(db_pool, final, "success 40") == "success 40"
    assert await scalar(db_pool, "SELECT total_requests FROM instance_request_metrics") == 1


# -- durable mode ---------------------------------------------------------------------------------------


async def _recorded(redis: aioredis.Redis, pool: aiopg.Pool, settings: Settings, correlation_id: str) -> bool:
    """The record is in the Redis stream, or already in Postgres (the writer deletes what it wrote)."""
    entries = await redis.xrange(redis_keys.key(settings, redis_keys.USAGE_STREAM))
    if any(r["correlation_id"] == correlation_id for i, fields in entries for r in entry_records(i, fields)):
        return True
    sql = "SELECT count(*) FROM finops.inference_usage WHERE correlation_id = %s AND status <> 'incomplete'"
    return bool(await scalar(pool, sql, correlation_id))


@pytest.mark.parametrize("stream", [False, True])
async def test_durable_answers_end_once_their_record_is_in_redis(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool, redis: aioredis.Redis,
    gateway_settings: Settings, stream: bool,
) -> None:  # fmt: skip
    worker = await start_worker(tokens=3)
    await insert_ready_instance(db_pool, SMALL, "127.0.0.1", worker.port or 0)
    key = await new_key(db_pool)
    client = await start_gateway(usage_durability="durable")
    confirmed = _sample("inventiv_gateway_usage_durable_total", {"result": "confirmed"})
    for i in range(5):
        headers = {"Authorization": f"Bearer {key}", "X-Request-Id": f"durable-{stream}-{i}"}
        body = {"model": SMALL, "messages": MESSAGES, "stream": stream}
        async with client.post(CHAT, json=body, headers=headers) as resp:
            await resp.read()
            assert resp.status == 200
        assert await _recorded(redis, db_pool, gateway_settings, f"durable-{stream}-{i}")
    # A stream's opened record is confirmed too, before its first byte.
    expected = 10 if stream else 5
    assert _sample("inventiv_gateway_usage_durable_total", {"result": "confirmed"}) - confirmed == expected


async def test_durable_mode_answers_without_redis_and_counts_the_fallback(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool
) -> None:
    worker = await start_worker(tokens=3)
    await insert_ready_instance(db_pool, SMALL, "127.0.0.1", worker.port or 0)
    key = await new_key(db_pool)
    client = await start_gateway(usage_durability="durable", redis_url="redis://127.0.0.1:1/0")
    fallback = _sample("inventiv_gateway_usage_durable_total", {"result": "fallback"})
    for stream in (False, True, False):
        body = {"model": SMALL, "messages": MESSAGES, "stream": stream}
        async with client.post(CHAT, json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
            await resp.read()
            assert resp.status == 200
    # Two JSON answers, a stream's opened and final records.
    assert _sample("inventiv_gateway_usage_durable_total", {"result": "fallback"}) - fallback == 4


async def test_at_the_default_delays_a_record_35_ms_into_the_window_still_ends_it_before_the_timer(
    redis: aioredis.Redis, settings: Settings
) -> None:
    """Records 20-40 ms apart (25-50 req/s) flush the window themselves: no wake-up for a timer."""
    stream = redis_keys.key(settings, redis_keys.USAGE_STREAM)
    recorder = UsageRecorder(redis, stream)
    recorder.start()
    started = time.monotonic()
    recorder.record(_record("r-1", None))
    await asyncio.sleep(0.035)
    assert await redis.xlen(stream) == 0, "the timer waits past 35 ms"
    if time.monotonic() - started >= 0.045:
        pytest.skip("the loop ran too late to tell the record from the 50 ms timer")
    recorder.record(_record("r-2", None))
    assert await _streamed(redis, stream) == ["r-1", "r-2"]
    await recorder.close()
