"""gateway.errors: the error middleware's answers, through a real aiohttp server."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.errors import ApiError, error_middleware


async def _api_error(request: web.Request) -> web.StreamResponse:
    raise ApiError(409, "Already there.", "conflict", "name")


async def _bug(request: web.Request) -> web.StreamResponse:
    raise RuntimeError("a bug")


async def _bug_mid_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"data: 1\n\n")
    raise RuntimeError("a bug after the response began")


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/conflict", _api_error)
    app.router.add_get("/bug", _bug)
    app.router.add_get("/bug-mid-stream", _bug_mid_stream)
    return await aiohttp_client(app)


async def test_client_errors_are_openai_shaped_and_not_logged(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for path, status, error in [
        ("/conflict", 409, {"message": "Already there.", "type": "invalid_request_error", "code": "conflict",
                            "param": "name"}),
        ("/nowhere", 404, {"message": "Not Found", "type": "invalid_request_error", "code": "not_found"}),
    ]:  # fmt: skip
        async with client.get(path) as resp:
            assert resp.status == status
            assert await resp.json() == {"error": error}
    async with client.post("/conflict") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "GET,HEAD"
        assert (await resp.json())["error"]["code"] == "method_not_allowed"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text


async def test_a_bug_is_a_json_500_and_logged_with_its_traceback(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with client.get("/bug") as resp:
        assert resp.status == 500
        assert await resp.json() == {
            "error": {"message": "The gateway failed to handle the request.", "type": "api_error",
                      "code": "internal_error"},
        }  # fmt: skip
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None and "a bug" in str(record.exc_info[1])


async def test_a_bug_after_the_response_began_ends_the_connection(client: Any) -> None:
    async with client.get("/bug-mid-stream") as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
