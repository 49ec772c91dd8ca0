"""The mock vLLM worker: OpenAI shapes and SSE framing, the `mock` hooks, and its counters."""

from __future__ import annotations

import asyncio
import base64
import math
import re
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient, AiohttpServer

from providers.mock.worker import WorkerConfig, create_app

MODEL = "test/model"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
MESSAGES = [{"role": "user", "content": "say hello"}]
# Long and slow enough that a stream is still running when a test looks at it or walks away.
SLOW = {"max_tokens": 1000, "mock": {"delay_ms": 20}}

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(create_app(WorkerConfig(model=MODEL, tokens=4)))


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, **extra}


async def stats(client: Client) -> dict[str, Any]:
    async with client.get("/mock/stats") as resp:
        result: dict[str, Any] = await resp.json()
        return result


async def sse(client: Client, path: str, body: dict[str, Any]) -> tuple[str, list[str]]:
    """The raw stream and its `data:` payloads, checking the framing of every event on the way."""
    async with client.post(path, json=body) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = await resp.text()
    assert text.endswith("data: [DONE]\n\n")
    events = text.split("\n\n")[:-1]
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    return text, [e.removeprefix("data: ") for e in events]


def parse_chunks(payloads: list[str]) -> list[dict[str, Any]]:
    assert payloads[-1] == "[DONE]"
    return [orjson.loads(p) for p in payloads[:-1]]


async def poll_stats(client: Client, **expected: int) -> dict[str, Any]:
    for _ in range(100):
        current = await stats(client)
        if all(current[k] == v for k, v in expected.items()):
            return current
        await asyncio.sleep(0.01)
    raise AssertionError(f"stats never reached {expected}: {current}")


async def test_chat_json_shape_and_usage(client: Client) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hello there world"}]},
    ]
    async with client.post(CHAT, json={"model": "echoed", "messages": messages}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", body["id"])
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "echoed"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "alpha bravo charlie delta "},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
async def test_completion_json_honors_max_tokens(client: Client, key: str) -> None:
    async with client.post(COMPLETIONS, json={"model": MODEL, "prompt": "one two", key: 18}) as resp:
        body = await resp.json()
    assert re.fullmatch(r"cmpl-[0-9a-f]{32}", body["id"])
    assert body["object"] == "text_completion"
    [choice] = body["choices"]
    assert len(choice["text"].split()) == 18
    assert choice["finish_reason"] == "length"
    assert choice["logprobs"] is None
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 18, "total_tokens": 20}


async def test_embeddings_are_deterministic_unit_vectors(client: Client) -> None:
    async with client.post(EMBEDDINGS, json={"model": MODEL, "input": ["a b", "c", [1, 2, 3]]}) as resp:
        body = await resp.json()
    async with client.post(EMBEDDINGS, json={"model": MODEL, "input": "a b"}) as resp:
        single = await resp.json()
    assert body["object"] == "list"
    assert body["model"] == MODEL
    assert body["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    vectors = [d["embedding"] for d in body["data"]]
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in body["data"])
    assert all(len(v) == 8 and math.isclose(math.hypot(*v), 1.0) for v in vectors)
    assert len({tuple(v) for v in vectors}) == 3
    assert single["data"][0]["embedding"] == vectors[0]


async def test_embeddings_base64(client: Client) -> None:
    body = {"model": MODEL, "input": "x"}
    async with client.post(EMBEDDINGS, json=body) as resp:
        floats = (await resp.json())["data"][0]["embedding"]
    async with client.post(EMBEDDINGS, json={**body, "encoding_format": "base64"}) as resp:
        encoded = (await resp.json())["data"][0]["embedding"]
    decoded = struct.unpack("<8f", base64.b64decode(encoded))
    assert decoded == pytest.approx(floats, rel=1e-6)


async def test_models_and_health(client: Client) -> None:
    async with client.get("/v1/models") as resp:
        models = await resp.json()
    assert models["object"] == "list"
    assert [(m["id"], m["object"]) for m in models["data"]] == [(MODEL, "model")]
    async with client.get("/health") as resp:
        assert resp.status == 200
        assert await resp.read() == b""
    counted = (await stats(client))["requests"]
    assert counted["/v1/models"] == 1
    assert counted["/health"] == 1


async def test_chat_stream_framing_without_usage(client: Client) -> None:
    text, payloads = await sse(client, CHAT, chat(stream=True))
    chunks = parse_chunks(payloads)
    assert "usage" not in text
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": "alpha "}
    assert all("role" not in d for d in deltas[1:])
    assert "".join(d.get("content", "") for d in deltas) == "alpha bravo charlie delta "
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 4 + ["stop"]


async def test_stream_usage_chunk_when_include_usage(client: Client) -> None:
    body = chat(stream=True, stream_options={"include_usage": True}, max_tokens=3)
    _, payloads = await sse(client, CHAT, body)
    chunks = parse_chunks(payloads)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert all("usage" not in c for c in chunks[:-1])
    counters = await stats(client)
    assert (counters["streams"], counters["include_usage_requests"], counters["completed"]) == (1, 1, 1)


async def test_completion_stream_honors_max_tokens(client: Client) -> None:
    _, payloads = await sse(client, COMPLETIONS, {"model": MODEL, "prompt": "hi", "stream": True, "max_tokens": 20})
    chunks = parse_chunks(payloads)
    assert all(c["object"] == "text_completion" for c in chunks)
    texts = [c["choices"][0]["text"] for c in chunks]
    assert len(texts) == 21
    assert texts[16:] == ["alpha ", "bravo ", "charlie ", "delta ", ""]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_same_request_same_bytes(client: Client) -> None:
    def strip(raw: str) -> str:
        return re.sub(r'"(chatcmpl-[0-9a-f]+|created":\d+)', "", raw)

    streams = [strip((await sse(client, CHAT, chat(stream=True)))[0]) for _ in range(2)]
    answers = []
    for _ in range(2):
        async with client.post(CHAT, json=chat()) as resp:
            answers.append(strip(await resp.text()))
    assert streams[0] == streams[1]
    assert answers[0] == answers[1]


async def test_metrics_gauges_count_running_requests(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app(WorkerConfig(model=MODEL, num_waiting=3)))
    async with client.post(CHAT, json=chat(stream=True, **SLOW)) as slow:
        await slow.content.readline()
        async with client.get("/metrics") as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    gauges = {name: families[name] for name in ("vllm:num_requests_running", "vllm:num_requests_waiting")}
    assert all(f.type == "gauge" for f in gauges.values())
    values = {name: [(s.labels, s.value) for s in f.samples] for name, f in gauges.items()}
    assert values == {
        "vllm:num_requests_running": [({"model_name": MODEL}, 1.0)],
        "vllm:num_requests_waiting": [({"model_name": MODEL}, 3.0)],
    }


@asynccontextmanager
async def serve(app: web.Application, handler_cancellation: bool) -> AsyncIterator[str]:
    """The app on a real port; TestServer always cancels handlers, and the write-error path needs not."""
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("handler_cancellation", [True, False])
async def test_client_leaving_mid_stream_is_counted(handler_cancellation: bool) -> None:
    async with (
        serve(create_app(WorkerConfig(model=MODEL)), handler_cancellation) as url,
        aiohttp.ClientSession(url) as session,
    ):
        resp = await session.post(CHAT, json=chat(stream=True, **SLOW))
        assert (await resp.content.readline()).startswith(b"data: ")
        resp.close()
        for _ in range(100):
            async with session.get("/mock/stats") as got:
                counters = await got.json()
            if counters["disconnects"]:
                break
            await asyncio.sleep(0.01)
    assert (counters["disconnects"], counters["in_flight"], counters["completed"]) == (1, 0, 0)


async def test_abort_after_drops_the_stream(client: Client) -> None:
    received = b""
    async with client.post(CHAT, json=chat(stream=True, mock={"abort_after": 2})) as resp:
        assert resp.status == 200
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)):
            async for data in resp.content.iter_any():
                received += data
    assert received.count(b"data: ") == 2
    assert b"[DONE]" not in received
    await poll_stats(client, aborted=1, in_flight=0, completed=0)


async def test_abort_after_closes_without_answer(client: Client) -> None:
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.post(CHAT, json=chat(mock={"abort_after": 0}))
    await poll_stats(client, aborted=1, in_flight=0, completed=0)


@pytest.mark.parametrize(("status", "error_type"), [(503, "server_error"), (429, "rate_limit_error")])
async def test_mock_status_answers_an_openai_error(client: Client, status: int, error_type: str) -> None:
    async with client.post(CHAT, json=chat(stream=True, mock={"status": status})) as resp:
        assert resp.status == status
        error = (await resp.json())["error"]
    assert error["type"] == error_type
    assert error["code"] == "mock_status"
    assert (await stats(client))["errors"] == 1


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, b"{not json", None),
        (CHAT, b"[1, 2]", None),
        (CHAT, b'{"messages": []}', "model"),
        (CHAT, b'{"model": "m"}', "messages"),
        (CHAT, b'{"model": "m", "messages": "hi"}', "messages"),
        (COMPLETIONS, b'{"model": "m", "prompt": "hi", "max_tokens": 0}', "max_tokens"),
        (COMPLETIONS, b'{"model": "m", "prompt": "hi", "max_tokens": "5"}', "max_tokens"),
        (COMPLETIONS, b'{"model": "m", "prompt": "hi", "mock": {"status": 200}}', "mock.status"),
        (COMPLETIONS, b'{"model": "m", "prompt": "hi", "mock": {"delay_ms": -1}}', "mock.delay_ms"),
        (COMPLETIONS, b'{"model": "m", "prompt": "hi", "mock": []}', "mock"),
        (EMBEDDINGS, b'{"model": "m", "input": []}', "input"),
        (EMBEDDINGS, b'{"model": "m", "input": "x", "encoding_format": "hex"}', "encoding_format"),
    ],
)
async def test_bad_input_is_a_400(client: Client, path: str, body: bytes, param: str | None) -> None:
    async with client.post(path, data=body, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert error["code"]
    assert error["param"] == param


async def test_stats_record_the_last_request_and_reset(client: Client) -> None:
    body = chat(max_tokens=2, user="u-1")
    async with client.post(CHAT, json=body, headers={"X-Request-Id": "req-7"}) as resp:
        assert resp.status == 200
    counters = await stats(client)
    assert counters["requests"][CHAT] == 1
    assert counters["completed"] == 1
    last = counters["last_request"]
    assert last["path"] == CHAT
    assert last["body"] == body
    assert last["headers"]["x-request-id"] == "req-7"
    async with client.post("/mock/reset") as resp:
        assert resp.status == 200
    counters = await stats(client)
    assert counters["requests"][CHAT] == 0
    assert (counters["completed"], counters["last_request"]) == (0, None)


async def test_ping_and_no_final_newline_hooks(client: Client) -> None:
    body = chat(stream=True, mock={"ping_every": 2, "no_final_newline": True})
    async with client.post(CHAT, json=body) as resp:
        text = await resp.text()
    assert text.endswith("}\n\ndata: [DONE]\n")
    events = text.split("\n\n")
    assert [i for i, e in enumerate(events) if e == ": ping"] == [2, 5]


async def test_delay_hooks_and_config_delays(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app(WorkerConfig(model=MODEL, tokens=2, first_token_delay_ms=100)))
    started = time.monotonic()
    async with client.post(CHAT, json=chat(mock={"first_delay_ms": 0})) as resp:
        await resp.read()
    assert time.monotonic() - started < 0.08
    started = time.monotonic()
    async with client.post(CHAT, json=chat(mock={"delay_ms": 30})) as resp:
        await resp.read()
    assert time.monotonic() - started >= 0.06
    started = time.monotonic()
    async with client.post(CHAT, json=chat(stream=True)) as resp:
        await resp.read()
    assert time.monotonic() - started >= 0.1


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        WorkerConfig(tokens=0)
    with pytest.raises(ValueError):
        WorkerConfig(token_delay_ms=-1)


async def test_openai_sdk_streaming_and_not(aiohttp_server: AiohttpServer) -> None:
    server = await aiohttp_server(create_app(WorkerConfig(model=MODEL, tokens=3)))
    base_url = str(server.make_url("/v1"))
    async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
        answer = await sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        stream = await sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=5,
        )
        chunks = [chunk async for chunk in stream]
        embedding = await sdk.embeddings.create(model=MODEL, input="hi")
    assert answer.choices[0].message.content == "alpha bravo charlie "
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ("alpha bravo charlie delta echo ")
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 6
    assert len(embedding.data[0].embedding) == 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
async def test_command_line_serves_on_uvloop() -> None:
    port = free_port()
    args = ["--port", str(port), "--model", "cli/model", "--tokens", "2", "--token-delay-ms", "1"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "providers.mock.worker", *args, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            for _ in range(200):
                try:
                    async with session.get("/health") as resp:
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)
            async with session.post(CHAT, json={"model": "cli/model", "messages": MESSAGES}) as resp:
                body = await resp.json()
            async with session.get("/metrics") as resp:
                assert 'model_name="cli/model"' in await resp.text()
    finally:
        proc.terminate()
        await proc.wait()
    assert body["choices"][0]["message"]["content"] == "alpha bravo "
