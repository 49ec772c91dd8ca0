"""No secret in any log line: a full flow with every logger at DEBUG, every record searched.

The flow: an admin key creates a key, that key streams and asks for JSON answers (with a session
header), a revoked, an unknown and a malformed key are refused, a worker reports with its secret and
with a wrong one, control routes answer and fail. Every record of every logger (the gateway's, the
worker's, aiohttp's access and server logs, asyncio's) is formatted the ways production formats it
(JSON and key=value, `extra` fields and exception text included) and searched, with its raw
attributes, for every key, key hash, worker secret and Authorization value the flow used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import aiopg
import pytest
from aiohttp.test_utils import TestClient
from fleet import SMALL, ServeOne, new_key, usage_rows

from inventiv.logs import JsonFormatter, KeyValueFormatter
from inventiv.settings import Settings
from inventiv.worker_secrets import worker_secrets
from sql.api_key_store import hash_key

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hello there"}]
# Loggers production quiets or that are off by default; each is turned to DEBUG here.
LOGGERS = ["", "aiohttp.access", "aiohttp.server", "aiohttp.web", "aiohttp.client", "aiohttp.internal",
           "gateway", "gateway.access", "inventiv", "providers", "sql", "asyncio", "redis", "aiopg"]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[_Records]:
    handler = _Records()
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _texts(record: logging.LogRecord) -> list[str]:
    """Everything a log line could show of `record`."""
    return [JsonFormatter().format(record), KeyValueFormatter().format(record), repr(record.__dict__),
            repr(record.args), str(record.msg)]


async def _call(client: TestClient, method: str, path: str, key: str | None, expect: int, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with client.request(method, path, headers={**headers, **kwargs.pop("headers", {})}, **kwargs) as resp:
        body = await resp.read()
        assert resp.status == expect, (method, path, resp.status, body)
        return await resp.json() if resp.content_type == "application/json" else body


async def _flow(serve_one: ServeOne, db_pool: aiopg.Pool, settings: Settings) -> list[str]:
    """Runs the flow; returns every secret it used."""
    admin = await new_key(db_pool, scopes=("admin", "inference"))
    _, client, inference, instance = await serve_one(tokens=3)
    created = await _call(client, "POST", "/api_keys", admin, 201, json={"name": "logs", "scopes": ["inference"]})
    key = created["key"]
    session = {"X-Inventiv-Session": "conversation-17"}
    await _call(client, "POST", CHAT, key, 200, json={"model": SMALL, "messages": MESSAGES}, headers=session)
    await _call(client, "POST", CHAT, key, 200, headers=session,
                json={"model": SMALL, "messages": MESSAGES, "stream": True})
    await _call(client, "POST", "/v1/embeddings", inference, 200, json={"model": SMALL, "input": "hi"})
    await _call(client, "POST", CHAT, inference, 404, json={"model": "no-such-model", "messages": MESSAGES})
    await _call(client, "POST", CHAT, inference, 400, data=b"{not json")
    await _call(client, "GET", "/instances", inference, 403)
    unknown = "ik_" + "7" * 40
    await _call(client, "POST", CHAT, unknown, 401, json={"model": SMALL, "messages": MESSAGES})
    await _call(client, "GET", "/instances", None, 401, headers={"Authorization": f"Basic {unknown}"})
    await _call(client, "GET", f"/instances/{instance}", admin, 200)
    await _call(client, "GET", "/api_keys", admin, 200)
    await _call(client, "POST", "/deployments", admin, 400, json={"model_id": "x"})
    await _call(client, "DELETE", f"/api_keys/{created['id']}", admin, 200)
    await _call(client, "POST", CHAT, key, 401, json={"model": SMALL, "messages": MESSAGES})
    secret = worker_secrets(settings).for_instance(instance)
    beat = {"instance_id": instance, "worker_status": "ready", "queue_depth": 0}
    await _call(client, "POST", "/internal/workers/heartbeat", secret, 200, json=beat)
    await _call(client, "POST", "/internal/workers/heartbeat", secret[::-1], 401, json=beat)
    await usage_rows(db_pool, "status", 3)
    keys = [admin, inference, key, unknown, secret[::-1]]
    return [*keys, *(hash_key(k) for k in keys), secret, hash_key(secret), settings.worker_secret_key or ""]


@pytest.mark.slow
async def test_no_secret_reaches_a_log_line(
    records: _Records, serve_one: ServeOne, db_pool: aiopg.Pool, gateway_settings: Settings
) -> None:
    secrets = await _flow(serve_one, db_pool, gateway_settings)
    texts = [text for record in records.records for text in _texts(record)]
    loggers = {record.name for record in records.records}
    # The capture saw the flow: access lines of the gateway and of aiohttp (the worker's), control and
    # inference requests alike.
    assert {"gateway.access", "aiohttp.access"} <= loggers, loggers
    assert any("/internal/workers/heartbeat" in text for text in texts)
    assert all(secrets)
    leaks = {(secret[:12], text[:300]) for text in texts for secret in secrets if secret in text}
    assert not leaks, leaks
