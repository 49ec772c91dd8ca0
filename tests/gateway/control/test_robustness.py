"""Odd input on every control route: always a 4xx with the OpenAI error shape, never a 500."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from gateway.app import create_app

if TYPE_CHECKING:
    from conftest import Api

UUID = "00000000-0000-4000-8000-000000000000"
WRITES = [("POST", "/deployments"), ("POST", "/api_keys"), ("POST", "/models"), ("PATCH", f"/models/{UUID}"),
          ("POST", "/offerings"), ("PATCH", f"/offerings/{UUID}")]
READS = ["/instances", "/action_logs", "/api_keys", "/providers", "/zones", "/instance_types", "/models",
         "/offerings", "/usage"]
BODIES = [b"", b"null", b"[]", b"{", b'{"a":', b"\xff\xfe", b'{"name": "\\u0000"}', b'{"__proto__": {}}',
          b'{"model_id": 1e400}', b'{"scopes": [null]}', b'{"data_volume_gb": 1e3}', b"1" * 5000]
QUERIES = ["limit=%00", "cursor=%F0%9F%92%A9", "cursor=" + "A" * 1001, "limit=1e3", "limit=", "x=%00",
           "limit=99999999999999999999", "cursor=W10", "from=0001-01-01&to=9999-12-31",
           "to=0001-01-05", "from=9999-12-31T23:59:59-12:00"]


def _assert_error(status: int, body: object) -> None:
    assert 400 <= status < 500, (status, body)
    assert isinstance(body, dict) and {"message", "type", "code"} <= set(body["error"]), body


@pytest.mark.parametrize(("method", "path"), WRITES)
async def test_odd_bodies(api: Api, method: str, path: str) -> None:
    for raw in BODIES:
        status, body = await api.call(method, path, data=raw, headers={"Content-Type": "application/json"})
        _assert_error(status, body)


@pytest.mark.parametrize("path", READS)
async def test_odd_queries(api: Api, path: str) -> None:
    for query in QUERIES:
        status, body = await api.call("GET", f"{path}?{query}")
        _assert_error(status, body)


@pytest.mark.parametrize("path", ["/instances/%00", "/instances/%F0%9F%92%A9", "/api_keys/" + "9" * 300,
                                  f"/instances/{UUID}x"])
async def test_odd_ids(api: Api, path: str) -> None:
    for method in ("GET", "DELETE"):
        status, body = await api.call(method, path)
        _assert_error(status, body)


async def test_oversized_body_is_413(aiohttp_client: Any, api: Api) -> None:
    client = await aiohttp_client(create_app(api.settings.replace(max_body_bytes=1024)))
    raw = b'{"name": "' + b"x" * 2048 + b'"}'
    async with client.post("/api_keys", data=raw, headers={**api.auth(), "Content-Type": "application/json"}) as resp:
        assert resp.status == 413
        _assert_error(resp.status, await resp.json())


async def test_wrong_method_is_405(api: Api) -> None:
    status, body = await api.call("PUT", "/deployments", json={})
    assert status == 405
    _assert_error(status, body)
