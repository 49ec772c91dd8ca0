"""Tracing a request: its correlation id end to end, its access-log line, its phases in Prometheus."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import random
import re
import time
from typing import Any

import aiopg
import orjson
import pytest
from aiohttp.test_utils import TestClient
from fleet import SMALL, ServeOne, usage_rows
from prometheus_client import REGISTRY

from gateway.app import access_sink
from gateway.tracing import PHASES, BufferedJsonLines, LoggedLines, client_request_id, own_request_id
from inventiv.logs import JsonFormatter
from inventiv.settings import Settings

CHAT = "/v1/chat/completions"
BODY = {"model": SMALL, "messages": [{"role": "user", "content": "hi"}]}
# The usage columns these tests read.
USAGE = "request_id, correlation_id, input_tokens, output_tokens, total_tokens"


@pytest.mark.parametrize(
    ("value", "kept"),
    [("req-123", True), ("0f8fad5b-d9cb-469f-a165-70867728950e", True), ("a" * 128, True), ("a/b:c=d+e.f_g", True),
     (None, False), ("", False), ("a" * 129, False), ("has space", False), ("new\nline", False), ("é", False),
     ("x;rm -rf", False), ('"quoted"', False)],
)  # fmt: skip
def test_only_a_sane_client_request_id_is_kept(value: str | None, kept: bool) -> None:
    assert client_request_id(value) == (value if kept else None)


def test_own_request_ids_are_in_time_order_and_unique() -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = []
    for _ in range(3):
        ids += [own_request_id() for _ in range(20_000)]
        time.sleep(0.002)
    after_ms = time.time_ns() // 1_000_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    # The first 12 digits are the milliseconds when it was made: ids of later milliseconds sort after.
    stamps = [int(i[:12], 16) for i in ids]
    assert before_ms <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= after_ms
    assert ids[20_000] > ids[19_999] and ids[40_000] > ids[39_999]
    # Within one millisecond the rest is random: 80 bits, not a counter.
    assert len({i[12:] for i in ids}) == len(ids) and len({i[12] for i in ids}) == 16


def test_own_request_ids_do_not_follow_the_random_module_or_repeat_in_a_forked_child() -> None:
    random.seed(7)
    first = own_request_id()[12:]
    random.seed(7)
    assert own_request_id()[12:] != first, "seeding the random module does not replay the ids"

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out without running anything of the parent's
        os.write(write, own_request_id()[12:].encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode()
    assert len(child) == 20 and child != own_request_id()[12:], "a forked child draws other bits"


async def _phase_count(client: TestClient, phase: str) -> float:
    # A scrape folds what the process counted since its last fold (gateway/hot_metrics.py).
    async with client.get("/metrics") as resp:
        assert resp.status == 200
    return REGISTRY.get_sample_value("inventiv_gateway_phase_seconds_count", {"phase": phase}) or 0.0



async def _stats(worker: Any, client: TestClient) -> dict[str, Any]:
    async with client.session.get(worker.make_url("/mock/stats")) as resp:
        stats: dict[str, Any] = await resp.json()
    return stats


async def test_the_clients_request_id_goes_to_the_worker_the_usage_row_and_back(
    serve_one: ServeOne, db_pool: aiopg.Pool
) -> None:
    worker, client, key, _ = await serve_one(tokens=4)
    headers = {"Authorization": f"Bearer {key}", "X-Request-Id": "trace-me-42"}
    for _ in range(2):  # the same id twice: two requests, two usage rows, nothing merged
        async with client.post(CHAT, json=BODY, headers=headers) as resp:
            assert resp.status == 200 and resp.headers["X-Request-Id"] == "trace-me-42"

    assert (await _stats(worker, client))["last_request"]["headers"]["x-request-id"] == "trace-me-42"
    rows = await usage_rows(db_pool, USAGE, 2)
    assert [r[1] for r in rows] == ["trace-me-42", "trace-me-42"]
    assert len({r[0] for r in rows}) == 2, "the usage rows keep ids of their own"
    # The old system's column names answer too.
    assert rows[0][2:] == (1, 4, 5)


async def test_an_insane_request_id_is_replaced(serve_one: ServeOne, db_pool: aiopg.Pool) -> None:
    _, client, key, _ = await serve_one()
    before_ms = time.time_ns() // 1_000_000
    async with client.post(CHAT, json=BODY, headers={"Authorization": f"Bearer {key}",
                                                     "X-Request-Id": "x" * 200}) as resp:  # fmt: skip
        assert resp.status == 200
        given = resp.headers["X-Request-Id"]
    assert given != "x" * 200 and len(given) == 32
    assert before_ms <= int(given[:12], 16) <= time.time_ns() // 1_000_000, "ours, in time order"
    [row] = await usage_rows(db_pool, USAGE, 1)
    assert row[0] == row[1] == given, "without a client id, ours is the correlation id"


async def test_one_access_line_per_request_with_what_an_operator_greps_for(
    serve_one: ServeOne, caplog: pytest.LogCaptureFixture
) -> None:
    _, client, key, instance = await serve_one(tokens=3)
    caplog.set_level(logging.INFO, logger="gateway.access")
    async with client.post(CHAT, json=BODY, headers={"Authorization": f"Bearer {key}", "X-Request-Id": "r-1"}):
        pass
    async with client.post(CHAT, json={**BODY, "model": "no/such-model"},
                           headers={"Authorization": f"Bearer {key}", "X-Request-Id": "r-2"}):  # fmt: skip
        pass

    lines = [r for r in caplog.records if r.name == "gateway.access"]
    assert [(r.request_id, r.status) for r in lines] == [("r-1", 200), ("r-2", 404)]  # type: ignore[attr-defined]
    first: Any = lines[0]
    assert (first.method, first.route, first.model, first.instance_id) == ("POST", CHAT, SMALL, instance)
    assert (first.prompt_tokens, first.completion_tokens, first.outcome) == (1, 3, "success")
    assert first.duration_ms > 0 and first.stream is False
    assert key not in str(first.__dict__), "never the key itself"


async def test_the_access_log_can_be_turned_off(
    start_worker: Any, start_gateway: Any, db_pool: aiopg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    from fleet import insert_ready_instance, new_key

    worker = await start_worker()
    await insert_ready_instance(db_pool, SMALL, "127.0.0.1", worker.port)
    key = await new_key(db_pool)
    admin = await new_key(db_pool, scopes=("admin",))
    client = await start_gateway(access_log=False)
    caplog.set_level(logging.INFO, logger="gateway.access")
    async with client.post(CHAT, json=BODY, headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 200
    async with client.get("/instances", headers={"Authorization": f"Bearer {admin}"}) as resp:
        assert resp.status == 200 and resp.headers["X-Request-Id"], "the id is still returned"
    assert not [r for r in caplog.records if r.name == "gateway.access"], "no line, inference or control"


async def test_each_phase_of_a_request_is_timed(serve_one: ServeOne) -> None:
    _, client, key, _ = await serve_one()
    # A fresh gateway: the first request opens a new connection to the worker, the second reuses it.
    before = {phase: await _phase_count(client, phase) for phase in PHASES}
    for _ in range(2):
        async with client.post(CHAT, json=BODY, headers={"Authorization": f"Bearer {key}"}) as resp:
            assert resp.status == 200
    after = {phase: await _phase_count(client, phase) for phase in PHASES}

    moved = {phase: after[phase] - before[phase] for phase in PHASES}
    assert moved == {"auth": 2, "model_resolution": 2, "worker_selection": 2, "upstream_connect": 1,
                     "first_byte": 2, "total": 2}  # fmt: skip


async def test_control_requests_carry_a_request_id_and_an_access_line(
    start_gateway: Any, db_pool: aiopg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    from fleet import new_key

    key = await new_key(db_pool, scopes=("admin",))
    client = await start_gateway()
    caplog.set_level(logging.INFO, logger="gateway.access")
    async with client.get("/instances", headers={"Authorization": f"Bearer {key}", "X-Request-Id": "ops-7"}) as r:
        assert r.status == 200 and r.headers["X-Request-Id"] == "ops-7"
    async with client.get("/instances/not-a-uuid", headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status == 400 and len(r.headers["X-Request-Id"]) == 32, "errors carry one too"
    lines = [(r.request_id, r.route, r.status) for r in caplog.records if r.name == "gateway.access"]  # type: ignore[attr-defined]
    assert lines[0] == ("ops-7", "/instances", 200) and lines[1][1:] == ("/instances/{id}", 400)


async def test_buffered_json_lines_match_the_json_log_format_and_go_out_in_batches() -> None:
    stream = io.BytesIO()
    sink = BufferedJsonLines(stream)
    sink.write({"request_id": "a", "status": 200})
    sink.write({"request_id": "b", "status": 404})
    assert stream.getvalue() == b"", "held until the batch goes out"
    await asyncio.sleep(sink.FLUSH_S + sink.SLACK_S + 0.05)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [(ln["request_id"], ln["status"]) for ln in lines] == [("a", 200), ("b", 404)]
    record = logging.makeLogRecord({"name": "gateway.access", "levelname": "INFO", "msg": "request"})
    formatted = orjson.loads(JsonFormatter().format(record))
    assert set(formatted) <= set(lines[0]) and lines[0]["logger"] == "gateway.access" and lines[0]["msg"] == "request"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", lines[0]["ts"])


async def test_a_line_written_past_the_batch_window_sends_the_batch_with_it_not_at_a_timer() -> None:
    stream = io.BytesIO()
    sink = BufferedJsonLines(stream)
    sink.FLUSH_S, sink.SLACK_S = 0.05, 30.0  # the fallback timer far away
    sink.write({"request_id": "a"})
    await asyncio.sleep(0.1)
    assert stream.getvalue() == b"", "no timer at the window's end: a line is written then"
    sink.write({"request_id": "b"})
    assert [orjson.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == ["a", "b"]
    sink.write({"request_id": "c"})
    assert len(stream.getvalue().splitlines()) == 2, "a new batch, held for its own window"
    sink.flush()


async def test_a_batch_no_line_follows_goes_out_at_the_timer() -> None:
    stream = io.BytesIO()
    sink = BufferedJsonLines(stream)
    sink.FLUSH_S, sink.SLACK_S = 0.03, 0.1
    sink.write({"request_id": "a"})
    await asyncio.sleep(0.05)
    assert stream.getvalue() == b"", "the timer waits the slack past the window"
    await asyncio.sleep(0.15)
    assert orjson.loads(stream.getvalue())["request_id"] == "a"


async def test_at_the_default_window_lines_140_ms_apart_go_out_with_the_second_not_at_a_timer() -> None:
    stream = io.BytesIO()
    sink = BufferedJsonLines(stream)
    started = time.monotonic()
    sink.write({"request_id": "a"})
    await asyncio.sleep(0.14)
    assert stream.getvalue() == b"", "the timer waits past 140 ms"
    if time.monotonic() - started >= 0.19:
        pytest.skip("the loop ran too late to tell the line from the 200 ms timer")
    sink.write({"request_id": "b"})
    assert len(stream.getvalue().splitlines()) == 2


async def test_a_buffered_line_is_the_head_then_every_field_in_order() -> None:
    stream = io.BytesIO()
    sink = BufferedJsonLines(stream)
    fields = {"request_id": "a", "status": 200, "model": "m", "outcome": None, "duration_ms": 1.5, "stream": False}
    sink.write(fields)
    sink.write({})
    sink.flush()
    first, empty = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert list(first) == ["ts", "level", "logger", "msg", *fields]
    assert first == {"ts": first["ts"], "level": "info", "logger": "gateway.access", "msg": "request", **fields}
    assert empty == {"ts": empty["ts"], "level": "info", "logger": "gateway.access", "msg": "request"}


async def test_a_full_batch_goes_out_at_once_and_a_broken_stream_fails_no_request() -> None:
    stream = io.BytesIO()
    sink = BufferedJsonLines(stream)
    for i in range(2000):
        sink.write({"request_id": f"r{i}", "padding": "x" * 40})
    assert stream.getvalue(), "past MAX_BYTES the batch is written without waiting"
    sink.flush()
    assert len(stream.getvalue().splitlines()) == 2000
    stream.close()
    sink.write({"request_id": "late"})
    sink.flush()  # a closed stderr: lost, never raised


def test_production_json_logs_get_the_buffered_sink_a_terminal_or_test_the_logging_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.app.json_to_stderr", lambda: True)
    assert isinstance(access_sink(settings), BufferedJsonLines)
    monkeypatch.setattr("gateway.app.json_to_stderr", lambda: False)
    assert isinstance(access_sink(settings), LoggedLines)
    assert access_sink(settings.replace(access_log=False)) is None
