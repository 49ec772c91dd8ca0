"""gateway.inference_connection: the inference routes served on the gateway's own connections, and
everything else handed to aiohttp, on the same connection, as the client sent it."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import orjson
import pytest
import uvloop
from aiohttp import web
from aiohttp.test_utils import TestClient
from fleet import SMALL, ServeOne

from gateway import inference
from gateway.inference_connection import response_head
from gateway.runner import GatewayRunner

CHAT = b"/v1/chat/completions"
BODY = orjson.dumps({"model": SMALL, "messages": [{"role": "user", "content": "hi"}]})


def _post(key: str, body: bytes = BODY, path: bytes = CHAT, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (b"POST %s HTTP/%s\r\nHost: gateway\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n" % (path, version, key.encode(), len(body), extra)) + body  # fmt: skip




_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


async def _read_answer(reader: asyncio.StreamReader) -> Answer:
    """One HTTP/1.1 answer, framed by Content-Length or chunked."""
    async with asyncio.timeout(10):
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        status_line, *lines = head[:-4].split("\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(int(status_line.split()[1]), headers, body)


async def _open(client: TestClient) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert client.server.port is not None
    return await asyncio.open_connection("127.0.0.1", client.server.port)


def _server(client: TestClient) -> Any:
    runner = client.server.runner
    assert isinstance(runner, GatewayRunner)
    return runner.server


async def _open_configured(
    serve_one: ServeOne, start_gateway: Any, **settings: Any
) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
    """A worker and a key (`serve_one`), then a gateway with `settings` changed, and a connection to it."""
    _, _, key, _ = await serve_one()
    reader, writer = await _open(await start_gateway(**settings))
    return key, reader, writer


async def _closed(reader: asyncio.StreamReader, timeout_s: float = 5.0) -> bool:
    async with asyncio.timeout(timeout_s):
        return await reader.read() == b""


async def test_an_inference_post_is_served_here_and_the_connection_goes_to_aiohttp_for_the_rest(
    serve_one: ServeOne,
) -> None:
    _, client, key, _ = await serve_one(tokens=3)
    server = _server(client)
    reader, writer = await _open(client)
    writer.write(_post(key))
    answer = await _read_answer(reader)
    assert answer.status == 200 and orjson.loads(answer.body)["usage"]["completion_tokens"] == 3
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-request-id"] and answer.headers["date"] and "aiohttp" in answer.headers["server"]
    assert len(server.inference_connections) == 1 and not server.connections
    # The same connection, another route: aiohttp serves it, and the connection stays with aiohttp.
    writer.write(_HEALTHZ)
    assert (await _read_answer(reader)).status == 200
    assert not server.inference_connections and len(server.connections) == 1
    writer.write(_post(key))
    assert (await _read_answer(reader)).status == 200
    writer.close()


async def test_pipelined_requests_are_answered_in_order_across_the_hand_over(serve_one: ServeOne) -> None:
    _, client, key, _ = await serve_one(tokens=2)
    reader, writer = await _open(client)
    writer.write(_post(key) + _post(key, extra=b"X-Request-Id: second\r\n") + _HEALTHZ + _post(key))
    answers = [await _read_answer(reader) for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 200]
    assert answers[1].headers["x-request-id"] == "second"
    assert orjson.loads(answers[2].body) == {"status": "ok"}
    writer.close()


async def test_a_body_in_later_reads_is_waited_for(serve_one: ServeOne) -> None:
    """An HTTP client (httpx: the openai SDK) often writes the head and the body separately."""
    _, client, key, _ = await serve_one(tokens=2)
    reader, writer = await _open(client)
    request = _post(key)
    head_end = request.index(b"\r\n\r\n") + 4
    writer.write(request[:head_end])
    await asyncio.sleep(0.05)
    writer.write(request[head_end : head_end + 5])
    await asyncio.sleep(0.05)
    writer.write(request[head_end + 5 :] + _post(key))
    assert [(await _read_answer(reader)).status for _ in range(2)] == [200, 200]
    assert len(_server(client).inference_connections) == 1
    writer.close()


async def test_a_body_that_does_not_come_in_time_is_a_408_and_the_connection_closes(
    serve_one: ServeOne, start_gateway: Any
) -> None:
    key, reader, writer = await _open_configured(serve_one, start_gateway, body_timeout_s=0.2)
    request = _post(key)
    writer.write(request[:-3])
    answer = await _read_answer(reader)
    assert answer.status == 408 and answer.headers["connection"] == "close"
    assert orjson.loads(answer.body)["error"]["code"] == "request_timeout"
    assert await _closed(reader)
    writer.close()


async def test_a_body_over_the_limit_is_refused_before_it_is_read_and_the_connection_goes_on(
    serve_one: ServeOne, start_gateway: Any
) -> None:
    key, reader, writer = await _open_configured(serve_one, start_gateway, max_body_bytes=1024)
    big = b'{"model": "%s", "padding": "%s"}' % (SMALL.encode(), b"x" * 5000)
    request = _post(key, big)
    writer.write(request[: request.index(b"\r\n\r\n") + 4])
    answer = await _read_answer(reader)
    assert answer.status == 413 and b"larger than 1024 bytes" in answer.body
    # The rest of that body is read and dropped; the next request on the connection is served.
    writer.write(request[request.index(b"\r\n\r\n") + 4 :] + _post(key))
    assert (await _read_answer(reader)).status == 200
    writer.close()


async def test_connection_close_is_honoured(serve_one: ServeOne) -> None:
    _, client, key, _ = await serve_one()
    reader, writer = await _open(client)
    writer.write(_post(key, extra=b"Connection: close\r\n"))
    answer = await _read_answer(reader)
    assert answer.status == 200 and answer.headers["connection"] == "close"
    assert await _closed(reader)
    writer.close()


async def test_a_streamed_answer_is_chunked_and_the_connection_is_kept(serve_one: ServeOne) -> None:
    _, client, key, _ = await serve_one(tokens=3)
    reader, writer = await _open(client)
    stream = orjson.dumps({"model": SMALL, "messages": [{"role": "user", "content": "hi"}], "stream": True})
    writer.write(_post(key, stream))
    answer = await _read_answer(reader)
    assert answer.status == 200 and answer.headers["transfer-encoding"] == "chunked"
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert b'"finish_reason":"stop"' in answer.body and answer.body.endswith(b"data: [DONE]\n\n")
    writer.write(_post(key))
    assert (await _read_answer(reader)).status == 200
    writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        # HTTP/1.0, a query string, a chunked body: aiohttp serves them.
        (lambda key: _post(key, version=b"1.0"), 200),
        (lambda key: _post(key, path=CHAT + b"?x=1"), 200),
        (lambda key: (b"POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer %s\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
                      % (key.encode(), len(BODY), BODY)), 200),
        # A header llhttp refuses, or a second Content-Length (a smuggling attempt): aiohttp answers its JSON 400.
        (lambda key: _post(key, extra=b"Bad Header: x\r\n"), 400),
        (lambda key: _post(key, extra=b"Content-Length: 1\r\n"), 400),
    ],
    ids=["http-1.0", "query-string", "chunked", "bad-header", "second-content-length"],
)  # fmt: skip
async def test_what_is_not_served_here_is_served_by_aiohttp(
    serve_one: ServeOne, request_bytes: Any, status: int
) -> None:
    _, client, key, _ = await serve_one()
    reader, writer = await _open(client)
    writer.write(request_bytes(key))
    answer = await _read_answer(reader)
    assert answer.status == status, answer.body
    if status == 400:
        assert orjson.loads(answer.body)["error"]["code"] == "malformed_request"
    assert not _server(client).inference_connections
    writer.close()


async def test_a_head_split_across_reads_is_handed_over_and_served(serve_one: ServeOne) -> None:
    _, client, key, _ = await serve_one()
    reader, writer = await _open(client)
    request = _post(key)
    writer.write(request[:20])
    await asyncio.sleep(0.05)
    writer.write(request[20:])
    assert (await _read_answer(reader)).status == 200
    writer.close()


async def test_a_client_expecting_100_continue_is_answered_at_once(serve_one: ServeOne) -> None:
    """curl sends `Expect: 100-continue` before a large body and waits up to a second for the 100."""
    _, client, key, _ = await serve_one(tokens=3)
    reader, writer = await _open(client)
    request = _post(key, extra=b"Expect: 100-continue\r\n")
    head_end = request.index(b"\r\n\r\n") + 4
    writer.write(request[:head_end])
    async with asyncio.timeout(0.5):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
    writer.write(request[head_end:])
    assert (await _read_answer(reader)).status == 200
    writer.close()


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout(
    serve_one: ServeOne, start_gateway: Any
) -> None:
    key, reader, writer = await _open_configured(serve_one, start_gateway, keepalive_timeout_s=0.3)
    writer.write(_post(key))
    assert (await _read_answer(reader)).status == 200
    assert await _closed(reader, timeout_s=3)
    writer.close()


@pytest.mark.interpreted_only
async def test_a_bug_is_a_json_500_and_the_connection_goes_on(
    serve_one: ServeOne, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _, client, key, _ = await serve_one()
    original = inference.parse_request

    def broken(raw: bytes, *, streamable: bool) -> Any:
        if b'"break"' in raw:
            raise RuntimeError("a handler bug")
        return original(raw, streamable=streamable)

    monkeypatch.setattr(inference, "parse_request", broken)
    reader, writer = await _open(client)
    with caplog.at_level(logging.ERROR, logger="gateway.inference_connection"):
        writer.write(_post(key, orjson.dumps({"model": SMALL, "messages": [], "break": True})))
        answer = await _read_answer(reader)
    assert answer.status == 500 and orjson.loads(answer.body)["error"]["code"] == "internal_error"
    assert any("a handler bug" in (r.exc_text or "") for r in caplog.records)
    writer.write(_post(key))
    assert (await _read_answer(reader)).status == 200
    writer.close()


async def _slow_stream(serve_one: ServeOne) -> tuple[Any, Any, asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream of megabytes to a client with a small receive buffer that does not read yet: until the
    connection's writes are paused. Returns the server, its connection, and the client's streams."""
    _, client, key, _ = await serve_one(tokens=20_000)
    server = _server(client)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", client.server.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 24)
    stream = orjson.dumps({"model": SMALL, "messages": [{"role": "user", "content": "hi"}], "stream": True})
    writer.write(_post(key, stream))
    async with asyncio.timeout(10):
        # Polled: the connection has no event for it, and a test-only one would be code in the hot path.
        while not server.inference_connections or not next(iter(server.inference_connections))._write_paused:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return server, next(iter(server.inference_connections)), reader, writer


async def test_a_slow_client_holds_the_stream_back_and_then_gets_all_of_it(serve_one: ServeOne) -> None:
    _, connection, reader, writer = await _slow_stream(serve_one)
    plane = connection._plane
    # The worker's connection is paused behind the parked write: its in-flight request is still open.
    assert sum(plane.workers.in_flight.values()) == 1
    answer = await _read_answer(reader)
    assert answer.status == 200 and len(answer.body) > 1_000_000
    assert answer.body.count(b'"finish_reason":"stop"') == 1 and answer.body.endswith(b"data: [DONE]\n\n")
    assert not connection._write_paused and sum(plane.workers.in_flight.values()) == 0
    writer.close()


async def test_a_slow_client_gone_while_its_write_is_parked_ends_the_request(serve_one: ServeOne) -> None:
    server, connection, _, writer = await _slow_stream(serve_one)
    task = connection._task
    assert task is not None
    writer.transport.abort()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    assert not server.inference_connections
    assert sum(connection._plane.workers.in_flight.values()) == 0


async def test_a_client_gone_mid_request_cancels_it(serve_one: ServeOne) -> None:
    _, client, key, _ = await serve_one(tokens=50, token_delay_ms=20)
    server = _server(client)
    _, writer = await _open(client)
    writer.write(_post(key))
    await asyncio.sleep(0.2)
    connection = next(iter(server.inference_connections))
    task = connection._task
    assert task is not None and not task.done()
    writer.close()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task


async def test_shutdown_closes_idle_connections(serve_one: ServeOne) -> None:
    _, client, key, _ = await serve_one()
    reader, writer = await _open(client)
    writer.write(_post(key))
    assert (await _read_answer(reader)).status == 200
    server = _server(client)
    server.pre_shutdown()
    await server.shutdown(1.0)
    assert await _closed(reader)
    writer.close()


async def _answers(client: TestClient, key: str) -> list[tuple[int, bytes]]:
    cases: list[tuple[dict[str, str], Any]] = [
        ({"Authorization": f"Bearer {key}"}, {"model": SMALL, "messages": [{"role": "user", "content": "hi"}]}),
        ({}, {"model": SMALL, "messages": []}),
        ({"Authorization": f"Bearer {key}"}, {"model": "no/such-model", "messages": []}),
        ({"Authorization": f"Bearer {key}"}, {"messages": []}),
    ]
    found = []
    for headers, body in cases:
        async with client.post(CHAT.decode(), json=body, headers=headers) as resp:
            found.append((resp.status, await resp.read()))
    return found


async def test_these_connections_and_the_application_give_the_same_answers(
    serve_one: ServeOne, aiohttp_client: Any, gateway_settings: Any
) -> None:
    from gateway.app import create_app

    _, ours, key, _ = await serve_one(tokens=3)
    through_app = await aiohttp_client(create_app(gateway_settings))
    expected = await _answers(through_app, key)
    assert [status for status, _ in expected] == [200, 401, 404, 400]
    got = await _answers(ours, key)
    # The JSON answer carries its own id and timestamp: compared without them.
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert got[1:] == expected[1:]
    assert got[0][1].count(b"charlie") == expected[0][1].count(b"charlie") == 1
    assert len(_server(ours).inference_connections) == 1


async def test_on_uvloop_as_the_gateway_runs(serve_one: ServeOne, gateway_settings: Any) -> None:
    """The gateway runs on uvloop, whose transports are not asyncio's: served, streamed, handed over."""
    _, _, key, _ = await serve_one(tokens=2)
    stream = orjson.dumps({"model": SMALL, "messages": [{"role": "user", "content": "hi"}], "stream": True})

    async def scenario() -> list[int]:
        from gateway.app import create_app

        app = create_app(gateway_settings)
        runner = GatewayRunner(app, head_timeout_s=5.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            request = _post(key)
            head_end = request.index(b"\r\n\r\n") + 4
            writer.write(request[:head_end])
            await asyncio.sleep(0.05)
            writer.write(request[head_end:] + _post(key, stream))
            statuses = [(await _read_answer(reader)).status for _ in range(2)]
            assert len(runner.server.inference_connections) == 1  # type: ignore[union-attr]
            writer.write(_HEALTHZ + _post(key))
            statuses += [(await _read_answer(reader)).status for _ in range(2)]
            assert not runner.server.inference_connections  # type: ignore[union-attr]
            writer.close()
            return statuses
        finally:
            await runner.cleanup()

    assert await asyncio.to_thread(uvloop.run, scenario()) == [200, 200, 200, 200]


async def test_pipelined_requests_past_the_bound_pause_reading_until_they_are_taken(serve_one: ServeOne) -> None:
    _, client, key, _ = await serve_one(tokens=5, token_delay_ms=20)
    reader, writer = await _open(client)
    big = orjson.dumps({"model": SMALL, "messages": [{"role": "user", "content": "hi"}], "padding": "x" * 100_000})
    writer.write(b"".join(_post(key, big, extra=b"X-Request-Id: r%d\r\n" % i) for i in range(4)))
    connection = None
    async with asyncio.timeout(5):
        while connection is None or not connection._read_paused:
            await asyncio.sleep(0.005)
            connection = next(iter(_server(client).inference_connections), None)
    answers = [await _read_answer(reader) for _ in range(4)]
    assert [(a.status, a.headers["x-request-id"]) for a in answers] == [(200, f"r{i}") for i in range(4)]
    assert not connection._read_paused
    writer.close()


async def test_a_body_still_coming_after_the_answer_is_cut_at_its_deadline(
    serve_one: ServeOne, start_gateway: Any
) -> None:
    _, reader, writer = await _open_configured(serve_one, start_gateway, body_timeout_s=0.3)
    request = _post("not-a-key")
    writer.write(request[:-5])
    # Refused before the body is read; the rest of the body never comes: the connection is closed.
    assert (await _read_answer(reader)).status == 401
    assert await _closed(reader)
    writer.close()


async def test_a_stream_asked_with_connection_close_ends_the_connection(serve_one: ServeOne) -> None:
    _, client, key, _ = await serve_one(tokens=3)
    reader, writer = await _open(client)
    stream = orjson.dumps({"model": SMALL, "messages": [{"role": "user", "content": "hi"}], "stream": True})
    writer.write(_post(key, stream, extra=b"Connection: close\r\n"))
    answer = await _read_answer(reader)
    assert answer.headers["connection"] == "close" and answer.body.endswith(b"data: [DONE]\n\n")
    assert await _closed(reader)
    writer.close()


@pytest.mark.interpreted_only
async def test_a_bug_after_a_stream_started_closes_the_connection(
    serve_one: ServeOne, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _, client, key, _ = await serve_one(tokens=3)

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a relay bug")

    monkeypatch.setattr(inference, "relay_to", broken)
    reader, writer = await _open(client)
    stream = orjson.dumps({"model": SMALL, "messages": [{"role": "user", "content": "hi"}], "stream": True})
    with caplog.at_level(logging.ERROR, logger="gateway.inference_connection"):
        writer.write(_post(key, stream))
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding: chunked" in head
        # No last chunk can say the stream ended: the connection is closed instead.
        assert await _closed(reader)
    assert any("a relay bug" in (r.exc_text or "") for r in caplog.records)
    writer.close()


async def test_shutdown_lets_the_request_in_flight_finish_then_closes(serve_one: ServeOne) -> None:
    _, client, key, _ = await serve_one(tokens=10, token_delay_ms=20)
    server = _server(client)
    reader, writer = await _open(client)
    writer.write(_post(key))
    async with asyncio.timeout(5):
        while not server.inference_connections or next(iter(server.inference_connections))._task is None:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    server.pre_shutdown()
    shutdown = asyncio.create_task(server.shutdown(5.0))
    assert (await _read_answer(reader)).status == 200
    await shutdown
    assert await _closed(reader)
    writer.close()


async def test_headers_are_read_in_any_case_and_the_first_of_a_repeated_one_counts(serve_one: ServeOne) -> None:
    _, client, key, _ = await serve_one()
    reader, writer = await _open(client)
    writer.write(_post(key, extra=b"x-request-id: first\r\nX-Request-Id: second\r\n"))
    answer = await _read_answer(reader)
    assert answer.status == 200 and answer.headers["x-request-id"] == "first"
    writer.close()


def test_a_response_head_refuses_a_value_that_would_split_it() -> None:
    head = response_head(200, {"X-Request-Id": "a"}, "Content-Length: 2\r\n", keep_alive=True)
    assert head.startswith(b"HTTP/1.1 200 OK\r\nX-Request-Id: a\r\nContent-Length: 2\r\nDate: ")
    assert head.endswith(b"\r\n\r\n") and b"Connection" not in head
    assert response_head(599, {}, "", keep_alive=False).startswith(b"HTTP/1.1 599 \r\n")
    with pytest.raises(ValueError, match="X-Evil"):
        response_head(200, {"X-Evil": "a\r\nSet-Cookie: x"}, "", keep_alive=True)
