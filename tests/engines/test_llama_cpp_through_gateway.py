"""A real llama.cpp server behind the gateway: the openai SDK through it, its key, its metrics, its aborts.

The engine is `llama-server` built from the llama-cpp-python sdist (tests/support/llama_server.py) serving
a tiny random model, started with its instance's worker secret as API key, exactly as a Scaleway worker's
boot script starts it (there through LLAMA_API_KEY). It is routed to as the `llama_cpp` engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import aiopg
import openai
import pytest
from aiohttp.test_utils import TestClient
from fixtures.llama import StartLlamaServer
from fleet import insert_ready_instance, new_key, set_instance, usage_rows
from llama_server import LlamaServer, metrics
from waiting import wait_until

from gateway.app import create_app
from inventiv.settings import Settings
from inventiv.worker_secrets import worker_secrets
from scheduler.health import check_ready_workers
from scheduler.runtime import ProviderSet, Runtime
from worker.engines import engine
from worker.probe import probe_worker

pytestmark = pytest.mark.slow

MODEL = "inventiv-test/tiny-llama"
MESSAGES = [{"role": "user", "content": "hello"}]
# The usage columns these tests read.
USAGE = "stream, status, prompt_tokens, completion_tokens, instance_id::text"


async def _add_model(pool: aiopg.Pool) -> None:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO models (name, hf_repo_id, engine, is_active) VALUES ('tiny llama', %s, 'llama_cpp', true)",
            (MODEL,),
        )


@pytest.fixture
async def engine_instance(
    db_pool: aiopg.Pool, settings: Settings, start_llama_server: StartLlamaServer
) -> tuple[str, LlamaServer]:
    """A ready llama_cpp instance whose llama-server holds the instance's secret as its key."""
    await _add_model(db_pool)
    instance_id = await insert_ready_instance(db_pool, MODEL, "127.0.0.1", 1, served_model=MODEL)
    await set_instance(db_pool, instance_id, engine="llama_cpp")
    secret = worker_secrets(settings).for_instance(instance_id)
    server = start_llama_server("--alias", MODEL, api_key=secret)
    await set_instance(db_pool, instance_id, worker_port=server.port)
    return instance_id, server


@pytest.fixture
async def key(db_pool: aiopg.Pool) -> str:
    return await new_key(db_pool)


@pytest.fixture
async def gateway(aiohttp_client: Any, settings: Settings, engine_instance: Any, key: str) -> TestClient:
    """The gateway, started once the instance and the key exist (it loads both at start)."""
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


@pytest.fixture
async def sdk(gateway: TestClient, key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key=key, max_retries=0) as client:
        yield client


async def _scalar(pool: aiopg.Pool, sql: str, *args: Any) -> Any:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(sql, args)
        row = await cur.fetchone()
    return row[0] if row else None



async def test_json_and_streaming_chat_through_the_gateway_are_metered(
    sdk: openai.AsyncOpenAI, engine_instance: tuple[str, LlamaServer], db_pool: aiopg.Pool
) -> None:
    instance_id, _ = engine_instance
    answer = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8)
    assert answer.model == MODEL and answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens == 8 and answer.usage.prompt_tokens > 0

    stream = await sdk.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=6, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6

    # Not asked for: the gateway asks the engine for usage to meter it, and strips it from the answer.
    stream = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5, stream=True)
    assert all(c.usage is None for c in [chunk async for chunk in stream])

    rows = await usage_rows(db_pool, USAGE, 3)
    assert [(r[0], r[1], r[3], r[4]) for r in rows] == [
        (False, "success", 8, instance_id), (True, "success", 6, instance_id), (True, "success", 5, instance_id),
    ]  # fmt: skip
    assert all(r[2] > 0 for r in rows), "prompt tokens as the engine counted them"


async def test_the_engine_refuses_anyone_without_its_secret(
    sdk: openai.AsyncOpenAI, engine_instance: tuple[str, LlamaServer], settings: Settings
) -> None:
    _, server = engine_instance
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2}
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer a-guess"},
                        {"Authorization": f"Bearer {worker_secrets(settings).for_instance('another')}"}):  # fmt: skip
            async with http.post(f"{server.base_url}/v1/chat/completions", json=body, headers=headers) as resp:
                assert resp.status == 401, await resp.text()
            async with http.get(f"{server.base_url}/metrics", headers=headers) as resp:
                assert resp.status == 401
    # Through the gateway, with a tenant's key: served.
    answer = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
    assert answer.usage is not None and answer.usage.completion_tokens == 2


async def test_a_client_that_leaves_mid_stream_stops_the_generation(
    gateway: TestClient, engine_instance: tuple[str, LlamaServer], db_pool: aiopg.Pool, key: str
) -> None:
    _, server = engine_instance
    before = await metrics(server)
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 3000, "stream": True}
    resp = await gateway.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert resp.status == 200
    for _ in range(3):
        assert await resp.content.readline()
    resp.close()  # the client goes away after a few tokens

    async def released() -> dict[str, Any]:
        after = await metrics(server)
        assert after["llamacpp:requests_processing"] == 0, after
        return after

    after = await wait_until(released, timeout_s=10, what="the engine to stop working on it")
    predicted = after["llamacpp:tokens_predicted_total"] - before.get("llamacpp:tokens_predicted_total", 0)
    assert 0 < predicted < 3000, f"{predicted} tokens generated of 3000 asked: cancelled, not finished"
    [row] = await usage_rows(db_pool, USAGE, 1)
    assert row[1] == "client_cancelled"


async def test_the_engines_own_metrics_give_the_queue_depth(
    engine_instance: tuple[str, LlamaServer], db_pool: aiopg.Pool, settings: Settings, redis: Any
) -> None:
    instance_id, server = engine_instance
    secret = worker_secrets(settings).for_instance(instance_id)
    gauges = engine("llama_cpp").queue_gauges
    async with aiohttp.ClientSession() as http:
        idle = await probe_worker(http, "127.0.0.1", server.port, 5.0, f"Bearer {secret}", gauges)
        body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 3000, "stream": True}
        async with http.post(f"{server.base_url}/v1/chat/completions", json=body,
                             headers={"Authorization": f"Bearer {secret}"}) as busy_stream:  # fmt: skip
            await busy_stream.content.readline()
            busy = await probe_worker(http, "127.0.0.1", server.port, 5.0, f"Bearer {secret}", gauges)
            rt = Runtime(settings, db_pool, redis, ProviderSet(settings), aiohttp.ClientSession())
            try:
                assert await check_ready_workers(rt) == 1
            finally:
                await rt.close()
            depth = await _scalar(db_pool, "SELECT worker_queue_depth FROM instances WHERE id = %s", instance_id)
    assert idle.answered and idle.models == (MODEL,) and idle.queue_depth == 0
    assert busy.queue_depth == 1, "requests_processing + requests_deferred"
    assert depth == 1, "the scheduler's health job read it with the instance's secret"


async def test_sequential_streams_reuse_the_pool_although_the_engine_closes_after_each(
    sdk: openai.AsyncOpenAI,
) -> None:
    # llama-server closes the connection after every streamed answer (it announced keep-alive): the next
    # request on that pooled connection must be retried on a fresh one, never fail.
    for _ in range(4):
        stream = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3, stream=True)
        assert len([chunk async for chunk in stream]) >= 3
        answer = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
        assert answer.usage is not None and answer.usage.completion_tokens == 2
