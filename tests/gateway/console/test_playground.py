"""The playground's inference key: minted once per session, revoked at sign-out or when the session
expired, and accepted by the data plane at once."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gateway import state
from gateway.console.playground import sweep_playground_keys
from inventiv import redis_keys

if TYPE_CHECKING:
    from conftest import Console

_KEY = re.compile(r'data-key="(ik_[^"]+)"')


async def _playground_key(console: Console) -> str:
    match = _KEY.search(await console.page("/console/playground"))
    assert match
    return match.group(1)


async def _active_playground_keys(console: Console) -> list[tuple[str, bool]]:
    return [(str(name), bool(active)) for name, active in await console.sql(
        "SELECT name, revoked_at IS NULL FROM api_keys WHERE name LIKE 'console playground:%%'")]


async def test_one_inference_key_per_session_revoked_at_sign_out(console: Console) -> None:
    token = await console.sign_in()
    key = await _playground_key(console)
    assert await _playground_key(console) == key
    assert await _active_playground_keys(console) == [("console playground: ops@demo.example", True)]
    scopes = await console.sql("SELECT scopes FROM api_keys WHERE name LIKE 'console playground:%%'")
    assert scopes == [(["inference"],)]
    async with console.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 200
    await console.post("/console/sign-out", {"csrf_token": token})
    assert await _active_playground_keys(console) == [("console playground: ops@demo.example", False)]
    async with console.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 401


async def test_the_sweep_revokes_the_keys_of_expired_sessions_only(console: Console) -> None:
    await console.sign_in()
    await _playground_key(console)
    app = console.client.app
    assert app is not None
    assert await sweep_playground_keys(app) == []
    await redis_keys.delete_prefix(app[state.REDIS], redis_keys.key(console.settings, "console:session:"))
    assert len(await sweep_playground_keys(app)) == 1
    assert await _active_playground_keys(console) == [("console playground: ops@demo.example", False)]
    assert await sweep_playground_keys(app) == []
