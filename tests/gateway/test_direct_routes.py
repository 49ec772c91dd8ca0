"""gateway.direct_routes: exact inference POSTs skip the application's router, and answer the same."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from fleet import SMALL, ServeOne

from gateway.direct_routes import DirectRoutes
from gateway.error_codes import ErrorCode
from gateway.errors import ApiError

CHAT = "/v1/chat/completions"


def _routes(seen: list[str]) -> DirectRoutes:
    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append("chat")
        if request.headers.get("X-Fail") == "api":
            raise ApiError(429, "slow down", ErrorCode.RATE_LIMIT_EXCEEDED)
        if request.headers.get("X-Fail") == "bug":
            raise RuntimeError("a handler bug")
        return web.Response(text="direct")

    async def app(request: web.BaseRequest) -> web.StreamResponse:
        seen.append("app")
        return web.Response(text="app")

    return DirectRoutes({CHAT: chat}, app)


@pytest.mark.parametrize(
    ("method", "path", "taken"),
    [("POST", CHAT, "chat"), ("GET", CHAT, "app"), ("POST", CHAT + "?x=1", "app"), ("POST", CHAT + "/", "app"),
     ("POST", "/v1/CHAT/completions", "app"), ("POST", "/deployments", "app")],
)  # fmt: skip
async def test_only_an_exact_inference_post_is_dispatched_directly(method: str, path: str, taken: str) -> None:
    seen: list[str] = []
    response = await _routes(seen)(make_mocked_request(method, path))
    assert seen == [taken]
    assert isinstance(response, web.Response) and response.text == ("direct" if taken == "chat" else "app")


async def test_an_expectation_is_left_to_the_application_which_answers_it() -> None:
    seen: list[str] = []
    await _routes(seen)(make_mocked_request("POST", CHAT, headers={"Expect": "100-continue"}))
    assert seen == ["app"]


async def test_a_client_expecting_100_continue_is_answered_at_once(serve_one: ServeOne) -> None:
    """curl sends `Expect: 100-continue` before a large body and waits up to a second for the 100."""
    _, client, key, _ = await serve_one(tokens=3)
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    body = b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}]}' % SMALL.encode()
    writer.write(b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (CHAT.encode(), key.encode(), len(body)))
    async with asyncio.timeout(0.5):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
    writer.write(body)
    async with asyncio.timeout(5):
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_a_direct_route_answers_errors_as_the_application_does() -> None:
    routes = _routes([])
    refused = await routes(make_mocked_request("POST", CHAT, headers={"X-Fail": "api"}))
    assert isinstance(refused, web.Response) and refused.status == 429
    assert refused.body == ApiError(429, "slow down", ErrorCode.RATE_LIMIT_EXCEEDED).body()
    writer = mock.Mock(output_size=0)  # nothing of the answer sent yet
    failed = await routes(make_mocked_request("POST", CHAT, headers={"X-Fail": "bug"}, writer=writer))
    assert failed.status == 500 and b'"internal_error"' in failed.body  # type: ignore[attr-defined]


async def _answers(client: TestClient, key: str) -> list[tuple[int, bytes]]:
    cases: list[tuple[dict[str, str], Any]] = [
        ({"Authorization": f"Bearer {key}"}, {"model": SMALL, "messages": [{"role": "user", "content": "hi"}]}),
        ({}, {"model": SMALL, "messages": []}),
        ({"Authorization": f"Bearer {key}"}, {"model": "no/such-model", "messages": []}),
        ({"Authorization": f"Bearer {key}"}, {"messages": []}),
    ]
    found = []
    for headers, body in cases:
        async with client.post(CHAT, json=body, headers=headers) as resp:
            found.append((resp.status, await resp.read()))
    return found


async def test_the_direct_way_and_the_application_give_the_same_answers(
    serve_one: ServeOne, aiohttp_client: Any, gateway_settings: Any
) -> None:
    from gateway.app import create_app

    _, direct, key, _ = await serve_one(tokens=3)
    through_app = await aiohttp_client(create_app(gateway_settings))
    expected = await _answers(through_app, key)
    assert [status for status, _ in expected] == [200, 401, 404, 400]
    got = await _answers(direct, key)
    # The JSON answer carries its own id and timestamp: compared without them.
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert got[1:] == expected[1:]
    assert got[0][1].count(b"charlie") == expected[0][1].count(b"charlie") == 1
