"""The official `openai` SDK pointed at the gateway sees an OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiopg
import openai
import pytest
from aiohttp.test_utils import TestClient
from fleet import SMALL, WorkerFactory, insert_ready_instance, new_key

Gateway = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def sdk(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool
) -> AsyncIterator[openai.AsyncOpenAI]:
    worker = await start_worker(tokens=6)
    await insert_ready_instance(db_pool, SMALL, "127.0.0.1", worker.port or 0)
    key = await new_key(db_pool)
    client = await start_gateway()
    async with openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=key, max_retries=0) as sdk:
        yield sdk


async def test_chat_completion(sdk: openai.AsyncOpenAI) -> None:
    answer = await sdk.chat.completions.create(model=SMALL, messages=[{"role": "user", "content": "hi there"}])
    assert answer.choices[0].message.content == "alpha bravo charlie delta echo foxtrot "
    assert answer.usage is not None and answer.usage.completion_tokens == 6


async def test_streamed_chat_completion(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="demo/qwen-small", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "alpha bravo charlie delta echo foxtrot "
    # The gateway asked for usage to meter the request; the client, who did not, gets no usage chunk.
    assert all(c.usage is None for c in chunks)


async def test_streamed_with_usage(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.completions.create(
        model=SMALL, prompt="one two", max_tokens=3, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2, 3)


async def test_embeddings_and_models(sdk: openai.AsyncOpenAI) -> None:
    embedding = await sdk.embeddings.create(model=SMALL, input="hello")
    assert len(embedding.data[0].embedding) == 8
    models = await sdk.models.list()
    assert {m.id for m in models.data} == {SMALL, "demo/qwen-small"}


async def test_errors_are_the_sdks_exceptions(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(model="no/such-model", messages=[{"role": "user", "content": "x"}])
    async with openai.AsyncOpenAI(base_url=str(sdk.base_url), api_key="ik_wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()
