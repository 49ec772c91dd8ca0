"""The inference path end to end: a real gateway app, real mock workers, real Postgres and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import aiopg
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from fleet import (
    SMALL,
    ServeOne,
    WorkerFactory,
    insert_ready_instance,
    new_key,
    refresh,
    set_instance,
    usage_rows,
)
from waiting import wait_until

from gateway import sse
from inventiv.settings import Settings
from inventiv.worker_secrets import worker_secrets
from providers.mock.worker import config_of

Gateway = Callable[..., Awaitable[TestClient]]
CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hello there"}]


def auth(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


async def stats(worker: TestServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(worker.make_url("/mock/stats")) as resp:
        return dict(await resp.json())


async def stats_when(worker: TestServer, timeout_s: float = 2.0, **expected: int) -> dict[str, Any]:
    """The worker's counters once they show `expected`."""

    async def shown() -> dict[str, Any]:
        counters = await stats(worker)
        assert all(counters[name] == value for name, value in expected.items()), counters
        return counters

    return await wait_until(shown, timeout_s=timeout_s, interval_s=0.02, what=f"the worker's counters at {expected}")


async def fleet(
    db_pool: aiopg.Pool, *workers: TestServer, model: str = SMALL, organization: str | None = "demo"
) -> list[str]:
    """Ready instances for `workers`, deployed by `organization` (the test keys' own, by default)."""
    return [
        await insert_ready_instance(db_pool, model, "127.0.0.1", w.port or 0, organization=organization)
        for w in workers
    ]


def events(body: bytes) -> list[Any]:
    """The JSON payloads of a stream, ids and timestamps removed (they differ per request)."""
    out = []
    for block in body.split(b"\n\n"):
        if not block.strip():
            continue
        payload = sse.event_json(block + b"\n\n")
        if payload is None:
            out.append(block.strip().decode())
            continue
        payload.pop("id", None)
        payload.pop("created", None)
        out.append(payload)
    return out


async def test_chat_json_is_the_workers_answer(serve_one: ServeOne, settings: Settings) -> None:
    worker, client, key, instance = await serve_one(tokens=5)
    async with client.post(CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=auth(key)) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert resp.headers["X-Inventiv-Instance"] == instance
        assert resp.headers["X-Request-Id"]
    assert body["choices"][0]["message"]["content"] == "alpha bravo charlie delta echo "
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
    seen = (await stats(worker))["last_request"]
    assert seen["body"] == {"model": SMALL, "messages": MESSAGES}
    # The worker sees its own secret, never the client's key.
    assert seen["headers"]["authorization"] == worker_secrets(settings).authorization(instance)
    assert key not in str(seen["headers"])


async def test_offering_name_is_rewritten_to_the_model(serve_one: ServeOne) -> None:
    worker, client, key, _ = await serve_one()
    async with client.post(CHAT, json={"model": "demo/qwen-small", "messages": MESSAGES}, headers=auth(key)) as resp:
        assert resp.status == 200
    assert (await stats(worker))["last_request"]["body"]["model"] == SMALL


async def test_stream_without_usage_asked_strips_the_usage_chunk(serve_one: ServeOne) -> None:
    worker, client, key, _ = await serve_one(tokens=4)
    body = {"model": SMALL, "messages": MESSAGES, "stream": True}
    async with client.post(CHAT, json=body, headers=auth(key)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["X-Accel-Buffering"] == "no"
        through = await resp.read()
    # The gateway asked the worker for usage, to meter the request...
    assert (await stats(worker))["last_request"]["body"]["stream_options"] == {"include_usage": True}
    direct = await _direct(worker, body)
    # ...and the client sees exactly what it would have seen without the gateway.
    assert events(through) == events(direct)
    assert b'"usage"' not in through


async def test_stream_with_usage_asked_is_passed_through(serve_one: ServeOne) -> None:
    worker, client, key, _ = await serve_one(tokens=3, ping_every=1)
    body = {"model": SMALL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    async with client.post(CHAT, json=body, headers=auth(key)) as resp:
        through = await resp.read()
    direct = await _direct(worker, body)
    assert events(through) == events(direct)
    assert events(through)[-2]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert ": ping" in events(through)


async def test_final_event_without_blank_line_is_forwarded(serve_one: ServeOne) -> None:
    _, client, key, _ = await serve_one(tokens=2)
    body = {"model": SMALL, "messages": MESSAGES, "stream": True, "mock": {"no_final_newline": True}}
    async with client.post(CHAT, json=body, headers=auth(key)) as resp:
        through = await resp.read()
    assert through.endswith(b"data: [DONE]\n")
    assert b'"usage"' not in through


async def _direct(worker: TestServer, body: dict[str, Any]) -> bytes:
    """The worker's own answer, asked with its key as the gateway asks."""
    key = config_of(worker.app).api_key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as session, session.post(worker.make_url(CHAT), json=body, headers=headers) as r:
        return await r.read()


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer ik_nope"}, "invalid_api_key"),
        ({"Authorization": "x"}, "missing_api_key"),
    ],
)
async def test_unauthenticated_is_401(start_gateway: Gateway, headers: dict[str, str], code: str) -> None:
    client = await start_gateway()
    async with client.post(CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=headers) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == code


async def test_revoked_key_stops_working(serve_one: ServeOne, db_pool: aiopg.Pool) -> None:
    _, client, key, _ = await serve_one()
    async with client.post(CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=auth(key)) as resp:
        assert resp.status == 200
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("UPDATE api_keys SET revoked_at = now()")

    # Within 2 s without any help: the background refresh runs every second.
    async def refused() -> bool:
        async with client.post(CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=auth(key)) as resp:
            return resp.status == 401

    await wait_until(refused, timeout_s=3, what="the revoked key to be refused")


@pytest.mark.parametrize(
    ("raw", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[]", 400, None),
        (b'{"messages": []}', 400, "model"),
        (b'{"model": 7, "messages": []}', 400, "model"),
        (b'{"model": "Qwen/Qwen2.5-0.5B-Instruct", "stream": "yes"}', 400, "stream"),
        (b'{"model": "Qwen/Qwen2.5-0.5B-Instruct", "stream": true, "stream_options": 1}', 400, "stream_options"),
        (b'{"model": "nope/none", "messages": []}', 404, "model"),
        (b'{"model": "demo/qwen-7b", "messages": []}', 503, "model"),
    ],
)
async def test_bad_requests_never_reach_a_worker(
    serve_one: ServeOne, raw: bytes, status: int, param: str | None
) -> None:
    worker, client, key, _ = await serve_one()
    async with client.post(CHAT, data=raw, headers=auth(key, **{"Content-Type": "application/json"})) as resp:
        assert resp.status == status
        error = (await resp.json())["error"]
    assert error.get("param") == param
    assert error["message"] and error["type"] and error["code"]
    assert (await stats(worker))["requests"][CHAT] == 0


async def test_body_over_the_limit_is_413(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool
) -> None:
    worker = await start_worker()
    await fleet(db_pool, worker)
    key = await new_key(db_pool)
    client = await start_gateway(max_body_bytes=1024)
    body = {"model": SMALL, "messages": [{"role": "user", "content": "x" * 2000}]}
    async with client.post(
        CHAT, data=orjson.dumps(body), headers=auth(key, **{"Content-Type": "application/json"})
    ) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "request_too_large"
    assert (await stats(worker))["requests"][CHAT] == 0


async def test_least_loaded_worker_is_chosen_and_stale_ones_never(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool
) -> None:
    busy, idle, stale = await start_worker(), await start_worker(), await start_worker()
    await insert_ready_instance(db_pool, SMALL, "127.0.0.1", busy.port or 0, queue_depth=5, organization="demo")
    idle_id = await insert_ready_instance(
        db_pool, SMALL, "127.0.0.1", idle.port or 0, queue_depth=1, organization="demo"
    )
    await insert_ready_instance(db_pool, SMALL, "127.0.0.1", stale.port or 0, heartbeat_age_s=400)
    key = await new_key(db_pool)
    client = await start_gateway()
    for _ in range(5):
        async with client.post(CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=auth(key)) as resp:
            assert resp.headers["X-Inventiv-Instance"] == idle_id
    assert (await stats(stale))["requests"][CHAT] == 0
    assert (await stats(busy))["requests"][CHAT] == 0


async def test_session_affinity_pins_and_fails_over(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool
) -> None:
    workers = [await start_worker() for _ in range(3)]
    ids = await fleet(db_pool, *workers)
    key = await new_key(db_pool)
    client = await start_gateway()
    served = set()
    for _ in range(6):
        async with client.post(
            CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=auth(key, **{"X-Inventiv-Session": "conv-1"})
        ) as resp:
            assert resp.status == 200
            assert "X-Inventiv-Session-Moved" not in resp.headers
            served.add(resp.headers["X-Inventiv-Instance"])
    assert len(served) == 1
    pinned = served.pop()
    await set_instance(db_pool, pinned, worker_status="unhealthy")
    await refresh(client)
    async with client.post(
        CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=auth(key, **{"X-Session-Id": "conv-1"})
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Inventiv-Session-Moved"] == "1"
        moved_to = resp.headers["X-Inventiv-Instance"]
    assert moved_to != pinned and moved_to in ids
    async with client.post(
        CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=auth(key, **{"X-Inventiv-Session": "conv-1"})
    ) as resp:
        assert resp.headers["X-Inventiv-Instance"] == moved_to
        assert "X-Inventiv-Session-Moved" not in resp.headers


async def org_id(db_pool: aiopg.Pool, slug: str) -> str:
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT id FROM organizations WHERE slug = %s", (slug,))
        row = await cur.fetchone()
    return str(row[0])


async def test_two_organizations_using_one_session_id_get_their_own_pins(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool, redis: aioredis.Redis,
    settings: Settings,
) -> None:  # fmt: skip
    worker = await start_worker()
    (instance,) = await fleet(db_pool, worker)
    ours, theirs = await new_key(db_pool), await new_key(db_pool, "acme")
    client = await start_gateway()
    for key in (ours, theirs):
        async with client.post(
            CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=auth(key, **{"X-Inventiv-Session": "conv-1"})
        ) as resp:
            assert resp.status == 200
    # One pin per organization, each under its own organization's id.
    names = sorted([k.decode() async for k in redis.scan_iter(match=f"{settings.redis_prefix}affinity:*:conv-1")])
    orgs = sorted([await org_id(db_pool, "demo"), await org_id(db_pool, "acme")])
    assert [name.split(":")[-3] for name in names] == orgs
    assert [await redis.get(name) for name in names] == [instance.encode()] * 2


@pytest.mark.parametrize(
    ("owner", "caller", "scopes", "shown"),
    [
        ("demo", "demo", ("inference",), True),
        ("demo", "acme", ("inference",), False),
        ("demo", "acme", ("inference", "admin"), False),
        (None, "acme", ("inference",), False),
        (None, "acme", ("inference", "admin"), True),
    ],
    ids=["own-instance", "other-orgs-instance", "other-orgs-instance-admin", "operator-instance",
         "operator-instance-admin"],
)
async def test_the_instance_header_is_shown_only_to_keys_that_may_see_the_instance(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool,
    owner: str | None, caller: str, scopes: tuple[str, ...], shown: bool,
) -> None:  # fmt: skip
    worker = await start_worker()
    (instance,) = await fleet(db_pool, worker, organization=owner)
    key = await new_key(db_pool, caller, scopes)
    client = await start_gateway()
    for stream in (False, True):
        body = {"model": SMALL, "messages": MESSAGES, "stream": stream}
        async with client.post(CHAT, json=body, headers=auth(key)) as resp:
            assert resp.status == 200
            assert resp.headers.get("X-Inventiv-Instance") == (instance if shown else None)


async def test_redis_down_still_serves_without_affinity(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool
) -> None:
    worker = await start_worker()
    await fleet(db_pool, worker)
    key = await new_key(db_pool)
    # Nothing listens on port 1: every Redis command fails at once.
    client = await start_gateway(redis_url="redis://127.0.0.1:1/0")
    async with client.post(
        CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=auth(key, **{"X-Inventiv-Session": "s"})
    ) as resp:
        assert resp.status == 200


async def test_connect_failure_is_retried_on_another_worker(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool, unused_tcp_port_factory: Any
) -> None:
    worker = await start_worker()
    dead_port = unused_tcp_port_factory()
    live = await insert_ready_instance(
        db_pool, SMALL, "127.0.0.1", worker.port or 0, queue_depth=3, organization="demo"
    )
    await insert_ready_instance(db_pool, SMALL, "127.0.0.1", dead_port, queue_depth=0)
    key = await new_key(db_pool)
    client = await start_gateway()
    async with client.post(CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=auth(key)) as resp:
        assert resp.status == 200
        assert resp.headers["X-Inventiv-Instance"] == live


async def test_no_reachable_worker_is_502(
    start_gateway: Gateway, db_pool: aiopg.Pool, unused_tcp_port_factory: Any
) -> None:
    await insert_ready_instance(db_pool, SMALL, "127.0.0.1", unused_tcp_port_factory())
    await insert_ready_instance(db_pool, SMALL, "127.0.0.1", unused_tcp_port_factory())
    key = await new_key(db_pool)
    client = await start_gateway()
    async with client.post(CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=auth(key)) as resp:
        assert resp.status == 502
        assert (await resp.json())["error"]["code"] == "upstream_unavailable"


async def test_worker_timeout_is_504(start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool) -> None:
    worker = await start_worker()
    await fleet(db_pool, worker)
    key = await new_key(db_pool)
    client = await start_gateway(upstream_first_byte_timeout_s=0.3)
    body = {"model": SMALL, "messages": MESSAGES, "mock": {"first_delay_ms": 3000}}
    async with client.post(CHAT, json=body, headers=auth(key)) as resp:
        assert resp.status == 504
    # The gateway hung up, so the worker stopped working on it.
    assert (await stats_when(worker, disconnects=1))["disconnects"] == 1


async def test_worker_dying_mid_stream_ends_with_an_error_event(serve_one: ServeOne) -> None:
    _, client, key, _ = await serve_one(tokens=10)
    body = {"model": SMALL, "messages": MESSAGES, "stream": True, "mock": {"abort_after": 3}}
    async with client.post(CHAT, json=body, headers=auth(key)) as resp:
        assert resp.status == 200
        got = events(await resp.read())
    assert len([e for e in got if isinstance(e, dict) and "choices" in e]) == 3
    # An error event ends it, and no `[DONE]`: that would tell the client its answer was complete.
    assert got[-1]["error"]["code"] == "upstream_error"
    assert "data: [DONE]" not in got


async def test_client_disconnect_mid_stream_cancels_the_worker(serve_one: ServeOne) -> None:
    worker, client, key, _ = await serve_one(tokens=1000, token_delay_ms=10)
    body = {"model": SMALL, "messages": MESSAGES, "stream": True}
    resp = await client.post(CHAT, json=body, headers=auth(key))
    assert resp.status == 200
    await resp.content.readany()
    resp.close()
    counters = await stats_when(worker, disconnects=1)
    assert counters["disconnects"] == 1
    assert counters["completed"] == 0


async def test_client_disconnect_before_first_byte_cancels_the_worker(serve_one: ServeOne) -> None:
    worker, client, key, _ = await serve_one()
    body = {"model": SMALL, "messages": MESSAGES, "mock": {"first_delay_ms": 5000}}
    task = asyncio.ensure_future(client.post(CHAT, json=body, headers=auth(key)))
    assert (await stats_when(worker, in_flight=1))["in_flight"] == 1
    task.cancel()
    assert (await stats_when(worker, disconnects=1))["disconnects"] == 1


async def test_models_lists_what_has_a_ready_worker_and_the_key_may_use(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool
) -> None:
    small, big = await start_worker(), await start_worker(model="Qwen/Qwen2.5-7B-Instruct")
    await fleet(db_pool, small)
    await fleet(db_pool, big, model="Qwen/Qwen2.5-7B-Instruct")
    demo_key = await new_key(db_pool)
    other_key = await new_key(db_pool, "other-org")
    client = await start_gateway()
    async with client.get("/v1/models", headers=auth(demo_key)) as resp:
        demo = sorted(m["id"] for m in (await resp.json())["data"])
    async with client.get("/v1/models", headers=auth(other_key)) as resp:
        other = sorted(m["id"] for m in (await resp.json())["data"])
    assert demo == ["Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "demo/qwen-7b", "demo/qwen-small"]
    # qwen-7b is a private offering of demo: other orgs see neither it nor its model.
    assert other == ["Qwen/Qwen2.5-0.5B-Instruct", "demo/qwen-small"]
    async with client.post(CHAT, json={"model": "demo/qwen-7b", "messages": MESSAGES}, headers=auth(other_key)) as resp:
        assert resp.status == 403


async def test_embeddings_are_proxied(serve_one: ServeOne) -> None:
    _, client, key, _ = await serve_one()
    async with client.post("/v1/embeddings", json={"model": SMALL, "input": ["a b", "c"]}, headers=auth(key)) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"]["prompt_tokens"] == 3


async def test_a_slow_client_gets_every_byte_of_a_large_stream(serve_one: ServeOne) -> None:
    # About 12 MB of events and a client that stops reading for a while: more than the sockets
    # buffer, so the relay parks its writes and pauses the worker's connection until the client drains.
    worker, client, key, _ = await serve_one(tokens=60_000)
    body = {"model": SMALL, "messages": MESSAGES, "stream": True}
    async with client.post(CHAT, json=body, headers=auth(key)) as resp:
        assert resp.status == 200
        received = bytearray(await resp.content.read(16384))
        await asyncio.sleep(0.5)
        while chunk := await resp.content.read(65536):
            received += chunk
    direct = await _direct(worker, body)
    assert len(received) > 10_000_000
    assert events(bytes(received)) == events(direct)


async def test_a_worker_leaving_the_fleet_has_its_idle_connections_closed(
    serve_one: ServeOne, db_pool: aiopg.Pool
) -> None:
    worker, client, key, instance = await serve_one()
    async with client.post(CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=auth(key)) as resp:
        assert resp.status == 200
    server = worker.runner.server if worker.runner is not None else None
    assert server is not None and len(server.connections) == 1, "the gateway keeps its connection alive"
    await set_instance(db_pool, instance, status="terminating")
    await refresh(client)
    await wait_until(lambda: server.connections == [], timeout_s=2, interval_s=0.02, what="the connection to close")


@pytest.mark.parametrize("asked", [True, False], ids=["usage-asked", "usage-added"])
async def test_a_client_that_leaves_once_it_has_done_is_billed_the_workers_count_as_a_success(
    serve_one: ServeOne, db_pool: aiopg.Pool, asked: bool
) -> None:
    # The worker ends its response 2 s after [DONE]: the client, done, leaves meanwhile.
    _, client, key, _ = await serve_one(tokens=4)
    body = {"model": SMALL, "messages": MESSAGES, "stream": True, "mock": {"end_delay_ms": 2000},
            **({"stream_options": {"include_usage": True}} if asked else {})}  # fmt: skip
    resp = await client.post(CHAT, json=body, headers=auth(key))
    while (line := await resp.content.readline()) != b"data: [DONE]\n":
        assert line, "the stream ended without [DONE]"
    resp.close()

    rows = await usage_rows(db_pool, "status, http_status, prompt_tokens, completion_tokens, usage_estimated", 1)
    assert rows == [("success", 200, 2, 4, False)]


# -- worker faults, with real worker processes -----------------------------------------------------


@contextlib.asynccontextmanager
async def worker_process(port: int, api_key: str, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m providers.mock.worker` on `port`, refusing callers without `api_key` (as vLLM does)."""
    env = {**os.environ, "VLLM_API_KEY": api_key}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "providers.mock.worker", "--port", str(port), "--model", SMALL, *args, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                    return resp.status == 200

            await wait_until(healthy, timeout_s=10, interval_s=0.025, what="the worker process to be healthy")
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def process_instance(
    db_pool: aiopg.Pool, settings: Settings, port_factory: Callable[[], int], *, queue_depth: int = 0
) -> tuple[str, int, str]:
    """A ready instance for a worker process to come: (instance id, port, the secret it must require)."""
    port = port_factory()
    instance = await insert_ready_instance(
        db_pool, SMALL, "127.0.0.1", port, queue_depth=queue_depth, organization="demo"
    )
    return instance, port, worker_secrets(settings).for_instance(instance)


async def test_a_worker_killed_mid_stream_cuts_it_bills_an_estimate_and_the_session_moves(
    start_gateway: Gateway, db_pool: aiopg.Pool, gateway_settings: Settings, unused_tcp_port_factory: Any
) -> None:
    ids: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as stack:
        procs = {}
        for _ in range(2):
            instance, port, secret = await process_instance(db_pool, gateway_settings, unused_tcp_port_factory)
            procs[instance] = await stack.enter_async_context(
                worker_process(port, secret, "--tokens", "2000", "--token-delay-ms", "10")
            )
            ids[instance] = port
        key = await new_key(db_pool)
        client = await start_gateway()
        session = {"X-Inventiv-Session": "conv-killed"}
        body = {"model": SMALL, "messages": MESSAGES, "stream": True}
        async with client.post(CHAT, json=body, headers=auth(key, **session)) as resp:
            assert resp.status == 200
            served = resp.headers["X-Inventiv-Instance"]
            received = [await resp.content.readline() for _ in range(6)]  # three events and their blank lines
            procs[served].send_signal(signal.SIGKILL)
            got = events(b"".join(received) + await resp.read())
        chunks = [e for e in got if isinstance(e, dict) and "choices" in e]
        assert len(chunks) >= 3
        assert got[-1]["error"]["code"] == "upstream_error" and "data: [DONE]" not in got
        ((status, http_status, instance, completion, estimated),) = await usage_rows(
            db_pool, "status, http_status, instance_id::text, completion_tokens, usage_estimated", 1
        )
        assert (status, http_status, instance, estimated) == ("upstream_error", 200, served, True)
        assert completion == len(chunks)
        # The pinned worker is dead: the next request of the session goes to the other one, and says so.
        body.update(stream=False, max_tokens=3)
        async with client.post(CHAT, json=body, headers=auth(key, **session)) as resp:
            assert resp.status == 200
            assert resp.headers["X-Inventiv-Instance"] == next(i for i in ids if i != served)
            assert resp.headers["X-Inventiv-Session-Moved"] == "1"


async def test_a_worker_hanging_before_its_first_byte_is_a_504_or_is_retried_elsewhere(
    start_gateway: Gateway, db_pool: aiopg.Pool, gateway_settings: Settings, unused_tcp_port_factory: Any
) -> None:
    hung, port, secret = await process_instance(db_pool, gateway_settings, unused_tcp_port_factory)
    async with worker_process(port, secret, "--first-token-delay-ms", "60000"):
        key = await new_key(db_pool)
        client = await start_gateway(upstream_first_byte_timeout_s=0.5)
        body = {"model": SMALL, "messages": MESSAGES}
        async with client.post(CHAT, json=body, headers=auth(key)) as resp:
            assert resp.status == 504
            assert (await resp.json())["error"]["code"] == "upstream_timeout"
        # A second, healthy worker (busier on paper, so the hung one is still tried first): it answers.
        healthy, port, secret = await process_instance(
            db_pool, gateway_settings, unused_tcp_port_factory, queue_depth=5
        )
        async with worker_process(port, secret):
            await refresh(client)
            async with client.post(CHAT, json=body, headers=auth(key)) as resp:
                assert resp.status == 200
                assert resp.headers["X-Inventiv-Instance"] == healthy
    rows = await usage_rows(db_pool, "status, http_status, instance_id::text", 2)
    assert rows == [("upstream_error", 504, hung), ("success", 200, healthy)]


_NOT_HTTP = b"SSH-2.0-OpenSSH_9.6\r\n\r\n"
_NOT_JSON = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{not json"
# One whole event, half of the next, then a chunk size that is not hexadecimal.
_BROKEN_CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"17\r\ndata: {\"choices\": []}\n\n\r\nb\r\ndata: {\"cho\r\nzz\r\nnot a chunk\r\n"
)


@contextlib.asynccontextmanager
async def garbage_worker(answer: bytes) -> AsyncIterator[int]:
    """A server that answers every request with `answer` and closes: a worker gone wrong. Yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "answer", [_NOT_HTTP, _NOT_JSON, _BROKEN_CHUNKED], ids=["not-http", "not-json", "broken-chunked"]
)
async def test_a_worker_answering_garbage_is_a_502_recorded_as_upstream_error(
    start_gateway: Gateway, db_pool: aiopg.Pool, answer: bytes
) -> None:
    async with garbage_worker(answer) as port:
        await insert_ready_instance(db_pool, SMALL, "127.0.0.1", port, organization="demo")
        key = await new_key(db_pool)
        client = await start_gateway()
        async with client.post(CHAT, json={"model": SMALL, "messages": MESSAGES}, headers=auth(key)) as resp:
            assert resp.status == 502
            error = (await resp.json())["error"]
    assert error["code"] == "upstream_invalid_response" and error["type"] == "upstream_error"
    assert await usage_rows(db_pool, "status, http_status", 1) == [("upstream_error", 502)]


@pytest.mark.parametrize(
    ("include_usage", "before_error"),
    [
        # Forwarded as it comes: the half event is ended where it was cut.
        (True, [{"choices": []}, 'data: {"cho']),
        # Whole events only (the gateway strips the usage it asked for): the half event is dropped.
        (False, [{"choices": []}]),
    ],
    ids=["passed-through", "whole-events"],
)
async def test_a_stream_whose_chunked_encoding_breaks_ends_with_an_error_event(
    start_gateway: Gateway, db_pool: aiopg.Pool, include_usage: bool, before_error: list[Any]
) -> None:
    async with garbage_worker(_BROKEN_CHUNKED) as port:
        await insert_ready_instance(db_pool, SMALL, "127.0.0.1", port, organization="demo")
        key = await new_key(db_pool)
        client = await start_gateway()
        body = {
            "model": SMALL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": include_usage}
        }
        async with client.post(CHAT, json=body, headers=auth(key)) as resp:
            assert resp.status == 200
            got = events(await resp.read())
    # The error comes as an event of its own, and nothing after it.
    assert got[:-1] == before_error
    assert got[-1]["error"]["code"] == "upstream_error"
    assert await usage_rows(db_pool, "status, usage_estimated", 1) == [("upstream_error", True)]
