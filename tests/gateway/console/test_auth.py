"""The session cookie on the control API and on console pages: CSRF on unsafe methods, expiry, sign-out,
the organization rules — and nothing on /v1."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from console_pages import EMAIL, PASSWORD, csrf_of
from yarl import URL

from gateway.console.sessions import COOKIE
from gateway.console.sign_in import safe_next
from inventiv import redis_keys

if TYPE_CHECKING:
    from conftest import Console


async def _api(console: Console, method: str, path: str, **kwargs: object) -> tuple[int, dict[str, object]]:
    async with console.client.request(method, path, **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.json()


async def test_the_control_api_accepts_the_session_cookie(console: Console) -> None:
    assert (await _api(console, "GET", "/instances"))[0] == 401
    await console.sign_in()
    status, body = await _api(console, "GET", "/instances")
    assert status == 200 and body["object"] == "list"


async def test_unsafe_methods_with_the_cookie_need_the_csrf_header(console: Console) -> None:
    token = await console.sign_in()
    body = {"name": "from the browser", "scopes": ["inference"]}
    status, refused = await _api(console, "POST", "/api_keys", json=body)
    assert (status, refused["error"]["code"]) == (403, "csrf_token_invalid")  # type: ignore[index]
    status, refused = await _api(console, "POST", "/api_keys", json=body, headers={"X-CSRF-Token": token + "x"})
    assert status == 403
    status, created = await _api(console, "POST", "/api_keys", json=body, headers={"X-CSRF-Token": token})
    assert status == 201 and created["organization_id"] == console.org_id


async def test_an_expired_session_is_a_401_that_says_so(console: Console) -> None:
    await console.sign_in()
    await redis_keys.delete_prefix(await _redis(console), redis_keys.key(console.settings, "console:session:"))
    status, body = await _api(console, "GET", "/instances")
    assert (status, body["error"]["code"]) == (401, "session_expired")  # type: ignore[index]
    async with console.client.get("/console/fleet", headers={"Accept": "text/html"}, allow_redirects=False) as resp:
        assert resp.status == 303 and URL(resp.headers["Location"]).path == "/console/sign-in"
        assert URL(resp.headers["Location"]).query["next"] == "/console/fleet"
    async with console.client.post("/console/deploy", data={"csrf_token": "x"}, headers={"Accept": "text/html"},
                                   allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/console/sign-in"
    async with console.client.get("/console/fleet/rows") as resp:
        assert resp.status == 401


async def _redis(console: Console):  # type: ignore[no-untyped-def]
    from gateway import state

    return console.client.app[state.REDIS]  # type: ignore[index]


async def test_the_data_plane_ignores_the_session_cookie(console: Console) -> None:
    await console.sign_in()
    status, body = await _api(console, "GET", "/v1/models")
    assert (status, body["error"]["code"]) == (401, "missing_api_key")  # type: ignore[index]


async def test_sign_out_ends_the_session_everywhere(console: Console) -> None:
    token = await console.sign_in()
    cookie = console.client.session.cookie_jar.filter_cookies(console.client.make_url("/"))[COOKIE].value
    await console.post("/console/sign-out", {"csrf_token": token})
    async with console.client.get("/instances", cookies={COOKIE: cookie}) as resp:
        assert resp.status == 401


async def test_a_wrong_password_and_a_missing_csrf_token_are_refused(console: Console) -> None:
    await console.sign_in(password="wrong password!", expect=401)
    assert COOKIE not in console.client.session.cookie_jar.filter_cookies(console.client.make_url("/"))
    text, _ = await console.post("/console/sign-in", {"email": EMAIL, "password": "x"}, expect=403)
    assert "csrf_token_invalid" in text
    token = await console.sign_in()
    text, _ = await console.post("/console/keys", {"name": "forged", "scopes": "admin"}, expect=403)
    text, _ = await console.post("/console/keys", {"name": "ok", "scopes": "inference", "csrf_token": token},
                                 expect=201)
    assert 'id="new-key">ik_' in text


async def test_the_session_cookie_is_http_only_same_site_and_secure_behind_tls(console: Console) -> None:
    async with console.client.get("/console/sign-in") as resp:
        token = csrf_of(await resp.text())
    async with console.client.post(
        "/console/sign-in", data={"csrf_token": token, "email": EMAIL, "password": PASSWORD},
        headers={"X-Forwarded-Proto": "https"}, allow_redirects=False,
    ) as resp:
        header = next(h for h in resp.headers.getall("Set-Cookie") if h.startswith(COOKIE))
    assert {"HttpOnly", "SameSite=Lax", "Secure", "Path=/"} <= {p.strip() for p in header.split(";")}


@pytest.mark.parametrize(("target", "expected"), [
    ("/console/keys", "/console/keys"),
    ("/console/instances/1?x=2", "/console/instances/1?x=2"),
    ("https://evil.example/console/", "/console/fleet"),
    ("//evil.example/console/", "/console/fleet"),
    ("/console\\..\\x", "/console/fleet"),
    ("/v1/models", "/console/fleet"),
    ("", "/console/fleet"),
    (None, "/console/fleet"),
])
def test_after_sign_in_only_console_paths(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected
