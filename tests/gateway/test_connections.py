"""gateway.connections through the real server (run_app) and raw sockets: slow heads, slow bodies, idle
connections, and requests that do not parse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import aiopg
import orjson
import pytest
from fleet import new_key
from waiting import wait_until

from gateway.server import run_app
from inventiv.settings import Settings

CHAT = "/v1/chat/completions"
Serve = Callable[..., Awaitable[int]]


@pytest.fixture
async def serve(gateway_settings: Settings, unused_tcp_port_factory: Callable[[], int]) -> AsyncIterator[Serve]:
    """Start the gateway as production does (run_app) with `changes`; returns its port."""
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(**changes: object) -> int:
        port = unused_tcp_port_factory()
        stop = asyncio.Event()
        task = asyncio.create_task(run_app(gateway_settings.replace(gateway_port=port, **changes), stop))
        stops.append((stop, task))
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    return resp.status == 200

            await wait_until(ready, timeout_s=20, what="the gateway to be ready")
        return port

    yield start
    for stop, task in stops:
        stop.set()
        await task


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response's head and (Content-Length) body."""
    async with asyncio.timeout(5.0):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        return head, await reader.readexactly(length)


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        # abort, not close: a connection the server already reset has nothing left to flush, and waiting
        # on its close would re-raise the reset.
        writer.transport.abort()
    with contextlib.suppress(ConnectionError):
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


async def closed_by_peer(reader: asyncio.StreamReader, within_s: float) -> bytes:
    """Everything the server sent until it closed the connection; fails if it did not within `within_s`."""
    async with asyncio.timeout(within_s):
        try:
            return await reader.read()
        except ConnectionResetError:
            # Closed with bytes of ours still unread on its side: the kernel sends a reset, not a FIN.
            return b""


async def test_a_head_trickled_byte_by_byte_is_cut_at_the_header_timeout(serve: Serve) -> None:
    port = await serve(header_timeout_s=0.5, keepalive_timeout_s=60.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {CHAT} HTTP/1.1\r\nHost: x\r\n" + "X-Slow: " + "a" * 200

    async def trickle() -> None:
        for byte in head.encode():
            writer.write(bytes([byte]))
            await asyncio.sleep(0.02)

    sender = asyncio.create_task(trickle())
    try:
        # Cut long before the 60 s idle timeout, and long before the head (4 s at this pace) is whole.
        assert await closed_by_peer(reader, within_s=3.0) == b""
        assert not sender.done()
    finally:
        sender.cancel()
        await close_all([writer])


async def test_a_head_in_one_read_on_a_keep_alive_connection_is_served(serve: Serve) -> None:
    port = await serve(header_timeout_s=0.3)
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            # Idle longer than the head timeout between requests: that is the idle timeout's business.
            await asyncio.sleep(0.5)


async def test_a_body_trickled_is_answered_408_and_the_connection_closed(serve: Serve, db_pool: aiopg.Pool) -> None:
    key = await new_key(db_pool)
    port = await serve(body_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n{".encode()
    )

    async def trickle() -> None:
        for _ in range(999):
            writer.write(b" ")
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(trickle())
    try:
        head, body = await read_response(reader)
        assert not sender.done(), "answered only once the body had all arrived"
    finally:
        sender.cancel()
        await close_all([writer])
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert b"connection: close" in head.lower()
    assert orjson.loads(body)["error"]["code"] == "request_timeout"


async def test_idle_connections_are_closed_after_the_keepalive_timeout(serve: Serve) -> None:
    port = await serve(keepalive_timeout_s=0.5)
    # Some never send a byte, one has had an answer and stays open for more.
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _ = await read_response(reader)
    assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in head.lower()
    try:
        async with asyncio.timeout(10.0):
            results = await asyncio.gather(*(r.read() for r, _ in [*idle, (reader, writer)]))
        assert results == [b""] * 201
    finally:
        await close_all([w for _, w in [*idle, (reader, writer)]])


async def raw_exchange(port: int, request: bytes) -> tuple[int, bytes, bytes]:
    """Send raw bytes; the status, head and body the server answered before closing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        answer = await closed_by_peer(reader, within_s=5.0)
    finally:
        await close_all([writer])
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["request-line", "tls-hello", "header-too-long", "bad-header", "broken-chunked"],
)
async def test_a_request_that_does_not_parse_is_a_json_400_without_an_error_log(
    serve: Serve, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    port = await serve()
    caplog.set_level(logging.DEBUG)
    status, head, body = await raw_exchange(port, request_bytes)
    assert status == 400 and b"application/json" in head.lower(), head
    assert orjson.loads(body)["error"]["type"] == "invalid_request_error"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text


async def test_client_errors_on_every_route_log_no_error_and_no_traceback(
    serve: Serve, db_pool: aiopg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    key = await new_key(db_pool)
    admin = await new_key(db_pool, scopes=("admin",))
    port = await serve(max_body_bytes=1024)
    base = f"http://127.0.0.1:{port}"
    bearer = {"Authorization": f"Bearer {key}"}
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as session:
        for method, path, headers, data, expected in [
            ("POST", CHAT, bearer, b"{not json", 400),
            ("POST", CHAT, {"Authorization": "Bearer ik_nope"}, b"{}", 401),
            ("POST", CHAT, {}, b"{}", 401),
            ("GET", CHAT, bearer, None, 405),
            ("GET", "/nowhere", bearer, None, 404),
            ("POST", CHAT, bearer, b"{" + b" " * 4096 + b"}", 413),
            ("POST", "/api_keys", {"Authorization": f"Bearer {admin}"}, b"[1]", 400),
            ("POST", "/api_keys", {"Authorization": f"Bearer {admin}"}, b" " * 4096, 413),
            ("GET", "/usage?to=0323-09-25T16:42:42%2B23:34", {"Authorization": f"Bearer {admin}"}, None, 400),
            ("GET", "/instances", bearer, None, 403),
        ]:
            async with session.request(method, base + path, headers=headers, data=data) as resp:
                assert resp.status == expected, (method, path, await resp.text())
                assert resp.content_type == "application/json"
                assert "error" in await resp.json()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
