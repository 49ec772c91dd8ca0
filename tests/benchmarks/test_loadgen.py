from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from benchmarks.integrity import ExpectedBody
from benchmarks.loadgen import Endpoint, build_request, closed_loop, fetch, hold_streams, open_loop
from providers.mock.worker import WorkerConfig, create_app

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
STREAM = b'{"model":"%s","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":5}' % MODEL.encode()


def test_request_bytes() -> None:
    endpoint = Endpoint("127.0.0.1", 8003)
    assert build_request("GET", endpoint, "/health") == b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8003\r\n\r\n"
    request = build_request("POST", endpoint, "/v1/chat/completions", b"{}", {"Authorization": "Bearer k"})
    assert request == (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8003\r\nAuthorization: Bearer k\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )


def test_only_loopback_targets() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Endpoint("10.0.0.1", 80)
    Endpoint("127.0.0.2", 80)


@pytest.fixture
async def worker(aiohttp_server: Any) -> Endpoint:
    server = await aiohttp_server(create_app(WorkerConfig(model=MODEL)))
    return Endpoint("127.0.0.1", server.port)


async def _expected(endpoint: Endpoint, request: bytes) -> ExpectedBody:
    reference = await fetch(endpoint, request)
    assert reference.status == 200
    return ExpectedBody.from_reference(reference.body)


async def test_closed_loop_reads_chunked_streams_on_keep_alive_connections(worker: Endpoint) -> None:
    request = build_request("POST", worker, "/v1/chat/completions", STREAM)
    expected = await _expected(worker, request)
    result = await closed_loop(worker, request, expected, concurrency=4, duration_s=0.3)
    assert result.ok > 8 and result.errors == result.non_2xx == result.mismatched == 0
    assert len(result.ttfb_s) == result.ok
    assert all(t <= total for t, total in zip(result.ttfb_s, result.latencies_s, strict=True))


async def test_differing_answers_and_errors_are_counted(worker: Endpoint) -> None:
    request = build_request("POST", worker, "/v1/chat/completions", STREAM)
    other = await _expected(worker, request.replace(b'"max_tokens":5', b'"max_tokens":6'))
    result = await closed_loop(worker, request, other, concurrency=2, duration_s=0.2)
    assert result.ok > 0 and result.mismatched == result.ok
    assert result.first_mismatch is not None and result.first_mismatch.startswith("byte ")

    missing = build_request("POST", worker, "/v1/nothing", b"{}")
    result = await closed_loop(worker, missing, other, concurrency=1, duration_s=0.1)
    assert result.ok == 0 and result.non_2xx > 0 and result.first_error is not None
    assert result.first_error.startswith("HTTP 404")


async def test_open_loop_sends_at_the_offered_rate(worker: Endpoint) -> None:
    request = build_request("POST", worker, "/v1/chat/completions", STREAM)
    expected = await _expected(worker, request)
    result = await open_loop(worker, request, expected, rate=100, duration_s=0.5, warm_connections=2)
    assert result.ok == 50 and result.errors == result.skipped == result.mismatched == 0
    assert result.wall_s >= 0.49


async def test_hold_streams_samples_while_all_are_open(aiohttp_server: Any) -> None:
    server = await aiohttp_server(create_app(WorkerConfig(model=MODEL, token_delay_ms=50)))
    endpoint = Endpoint("127.0.0.1", server.port)
    request = build_request("POST", endpoint, "/v1/chat/completions", STREAM)
    expected = await _expected(endpoint, request)
    app: web.Application = server.app
    in_flight: list[int] = []

    def sample(started: int) -> int:
        # The worker's own count of requests in flight, read from its app state (no await possible here).
        worker = next(v for v in app.values() if hasattr(v, "in_flight"))
        in_flight.append(worker.in_flight)
        return started

    result, started = await hold_streams(endpoint, request, expected, count=20, while_open=sample)
    assert started == 20 and in_flight == [20]
    assert result.ok == 20 and result.mismatched == result.errors == 0
