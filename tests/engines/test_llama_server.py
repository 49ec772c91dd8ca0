"""A real llama.cpp llama-server (tiny random model): the behaviour the gateway relies on.

API-key checks, chat completions with usage (plain and streamed), Prometheus metrics, the model list,
a client disconnect cancelling generation, connections closed after streams, /health while loading.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from fixtures.llama import LLAMA_API_KEY, StartLlamaServer
from llama_server import LlamaBuild, LlamaServer, metrics, start_server, stop_server
from tiny_gguf import SLOW_LOAD_LAYERS, write_tiny_model
from waiting import wait_until

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Say hello to the gateway."}]


async def chat(session: aiohttp.ClientSession, server: LlamaServer, **body: Any) -> dict[str, Any]:
    async with session.post(f"{server.base_url}/v1/chat/completions", json={"messages": MESSAGES, **body}) as response:
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


def sse_events(payload: bytes) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded except the final "[DONE]"."""
    events: list[Any] = []
    for block in payload.replace(b"\r\n", b"\n").split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                data = line.removeprefix(b"data: ")
                events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return events


async def test_api_key_guards_everything_but_health(llama_server: LlamaServer) -> None:
    url = llama_server.base_url
    async with aiohttp.ClientSession() as session:
        for path in ("/v1/models", "/metrics"):
            async with session.get(f"{url}{path}") as response:
                assert response.status == 401, path
                assert (await response.json())["error"]["type"] == "authentication_error"
            async with session.get(f"{url}{path}", headers={"Authorization": "Bearer wrong"}) as response:
                assert response.status == 401, path
            async with session.get(f"{url}{path}", headers=llama_server.headers) as response:
                assert response.status == 200, path
        async with session.get(f"{url}/health") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}


async def test_chat_completion_reports_usage(llama_server: LlamaServer) -> None:
    async with aiohttp.ClientSession(headers=llama_server.headers) as session:
        first = await chat(session, llama_server, max_tokens=8, temperature=0)
        second = await chat(session, llama_server, max_tokens=8, temperature=0)
    (choice,) = first["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    # The tiny model never emits EOS: every completion runs to max_tokens.
    assert choice["finish_reason"] == "length"
    usage = first["usage"]
    assert usage["completion_tokens"] == 8
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # Greedy decoding on a fixed model: the same prompt gives the same text.
    assert second["choices"][0]["message"]["content"] == choice["message"]["content"]


async def test_stream_ends_with_a_usage_chunk_when_asked(llama_server: LlamaServer) -> None:
    body = {"messages": MESSAGES, "max_tokens": 6, "temperature": 0, "stream": True}
    # A connection per request: llama-server closes the connection after a stream (see below).
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(headers=llama_server.headers, connector=connector) as session:
        url = f"{llama_server.base_url}/v1/chat/completions"
        async with session.post(url, json={**body, "stream_options": {"include_usage": True}}) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            with_usage = sse_events(await response.read())
        async with session.post(url, json=body) as response:
            without_usage = sse_events(await response.read())

    assert with_usage[-1] == "[DONE]"
    *chunks, usage_chunk, _ = with_usage
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert content
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    # OpenAI's shape: a last chunk with no choices and the usage.
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 6
    assert usage_chunk["usage"]["prompt_tokens"] > 0
    assert all(not c.get("usage") for c in chunks)
    # Without the option there is no usage chunk at all.
    assert without_usage[-1] == "[DONE]"
    assert all(not c.get("usage") and c["choices"] for c in without_usage[:-1])


async def test_metrics_expose_processing_and_deferred_requests(llama_server: LlamaServer) -> None:
    async with aiohttp.ClientSession(headers=llama_server.headers) as session:
        async with session.get(f"{llama_server.base_url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        before = await metrics(llama_server)
        await chat(session, llama_server, max_tokens=4)
        after = await metrics(llama_server)
    assert before["llamacpp:requests_processing"] == 0
    assert before["llamacpp:requests_deferred"] == 0
    assert after["llamacpp:requests_processing"] == 0
    assert after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"] == 4


async def test_models_list_the_model_path_or_its_alias(start_llama_server: StartLlamaServer) -> None:
    plain = start_llama_server()
    aliased = start_llama_server("--alias", "inventiv-tiny")
    async with aiohttp.ClientSession(headers=plain.headers) as session:
        async with session.get(f"{plain.base_url}/v1/models") as response:
            (model,) = (await response.json())["data"]
        async with session.get(f"{aliased.base_url}/v1/models") as response:
            (aliased_model,) = (await response.json())["data"]
        reply = await chat(session, aliased, max_tokens=1, model="not-this-one")
    # By default the id is the -m argument as given.
    assert model["id"] == str(plain.model)
    assert model["owned_by"] == "llamacpp"
    assert aliased_model["id"] == "inventiv-tiny"
    # A single-model server ignores the requested name and answers with its own.
    assert reply["model"] == "inventiv-tiny"


async def test_client_disconnect_stops_generation(llama_server: LlamaServer) -> None:
    # About 2 s of generation on this model; the tiny model never stops early, so only a cancel stops short.
    max_tokens = 2000
    body = {"messages": MESSAGES, "max_tokens": max_tokens, "stream": True}
    async with aiohttp.ClientSession(headers=llama_server.headers) as session:
        before = await metrics(llama_server)
        response = await session.post(f"{llama_server.base_url}/v1/chat/completions", json=body)
        assert response.status == 200
        await response.content.readuntil(b"\n\n")
        assert (await metrics(llama_server))["llamacpp:requests_processing"] == 1
        response.close()  # drops the connection mid-stream

        async def released() -> dict[str, Any]:
            after = await metrics(llama_server)
            assert after["llamacpp:requests_processing"] == 0, after
            return after

        after = await wait_until(released, timeout_s=10, interval_s=0.02, what="the generation to stop")
    # A released slot adds its generated tokens to the counter: fewer than asked means it was cancelled.
    generated = after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"]
    assert 0 < generated < max_tokens


async def test_connection_is_closed_after_a_stream_despite_keep_alive(llama_server: LlamaServer) -> None:
    """A pooled connection that carried a stream is dead: the next request on it gets a disconnect."""
    reader, writer = await asyncio.open_connection("127.0.0.1", llama_server.port)
    try:
        for stream in (False, True):
            body = orjson.dumps({"messages": MESSAGES, "max_tokens": 2, "stream": stream})
            head = (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {llama_server.api_key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            response_head = await reader.readuntil(b"\r\n\r\n")
            assert response_head.startswith(b"HTTP/1.1 200")
            assert b"Keep-Alive: timeout=5, max=100" in response_head
            if stream:
                await reader.readuntil(b"\r\n0\r\n\r\n")  # the last chunk: the body is complete
            else:
                length = next(
                    int(line.split(b":")[1]) for line in response_head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)  # and the connection stays open for the next request
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    finally:
        writer.close()
        await writer.wait_closed()


def test_health_answers_503_until_the_model_is_loaded(llama_build: LlamaBuild, tmp_path: Path) -> None:
    # The tiny model loads in ~10 ms; this deeper one in ~1 s (SLOW_LOAD_LAYERS): ~200 polls see the 503.
    model = write_tiny_model(tmp_path / "deep.gguf", llama_build.gguf_py, n_layer=SLOW_LOAD_LAYERS)
    server = start_server(llama_build, model, api_key=LLAMA_API_KEY, log_path=tmp_path / "llama-server.log")
    stop_server(server)
    statuses = server.startup_statuses
    assert statuses[-1] == 200
    assert set(statuses) == {503, 200}
