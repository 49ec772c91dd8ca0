"""gateway.coro_step: the CPython and asyncio behaviours that stepping a write by hand relies on, pinned
first on plain coroutines, then on aiohttp's real response writer to a client that does not read (on
asyncio's loop and on uvloop). A failure here means the relay's writes can no longer be stepped by hand:
its message says which behaviour changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest
from aiohttp import web
from event_loops import on_both_loops
from slow_client import WAIT_S, prepared_response

from gateway.coro_step import step_coroutine

# Each write is bigger than what aiohttp buffers before it checks for backpressure (64 KiB), so every
# write to a full client waits; 64 MiB unread is far past every buffer on the way.
BLOCK = bytes(range(256)) * 512
NEVER_PARKS = 64 * 1024 * 1024

Resumed = list[Coroutine[Any, Any, Any]]


async def no_suspension() -> str:
    return "done"


async def waits_on(future: asyncio.Future[str]) -> str:
    return await future


async def through_a_chain(future: asyncio.Future[str]) -> str:
    return await waits_on(future)


def test_a_coroutine_that_does_not_suspend_ends_within_its_first_send() -> None:
    coro = no_suspension()
    with pytest.raises(StopIteration) as ended:
        coro.send(None)
    assert ended.value.value == "done", "StopIteration no longer carries a coroutine's return value"
    resumed: Resumed = []
    assert step_coroutine(no_suspension(), resumed.append)
    assert resumed == []


def test_a_coroutine_waiting_on_a_future_yields_that_future_up_the_await_chain() -> None:
    async def scenario() -> None:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        coro = through_a_chain(future)
        yielded = coro.send(None)
        assert yielded is future, (
            f"a coroutine awaiting an unfinished asyncio Future yielded {yielded!r}, not the Future itself: "
            "step_coroutine no longer knows what to wait for"
        )
        assert future._asyncio_future_blocking is True, "Future.__await__ no longer flags the Future as blocking"
        future.set_result("result")
        with pytest.raises(StopIteration) as ended:
            coro.send(None)
        assert ended.value.value == "result", "a coroutine resumed after its Future is done did not get its result"

    asyncio.run(scenario())


def test_a_suspended_coroutine_is_resumed_once_its_future_is_done() -> None:
    async def scenario() -> None:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        coro = through_a_chain(future)
        resumed: Resumed = []
        assert not step_coroutine(coro, resumed.append)
        # Cleared as a Task clears it: the Future can be awaited again by anyone.
        assert future._asyncio_future_blocking is False
        await asyncio.sleep(0)
        assert resumed == []
        future.set_result("result")
        await asyncio.sleep(0)
        assert resumed == [coro]
        assert step_coroutine(coro, resumed.append)

    asyncio.run(scenario())


def test_the_future_a_coroutine_parked_on_can_be_awaited_by_others() -> None:
    # aiohttp's write_eof() awaits the very Future a parked write waits on (the protocol's drain waiter).
    async def scenario() -> None:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        resumed: Resumed = []
        assert not step_coroutine(waits_on(future), resumed.append)
        other = asyncio.ensure_future(waits_on(future))
        await asyncio.sleep(0)
        future.set_result("result")
        async with asyncio.timeout(WAIT_S):
            assert await other == "result"

    asyncio.run(scenario())


def test_the_futures_exception_comes_out_of_the_next_step() -> None:
    async def scenario() -> None:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        coro = waits_on(future)
        resumed: Resumed = []
        assert not step_coroutine(coro, resumed.append)
        future.set_exception(ConnectionResetError("gone"))
        await asyncio.sleep(0)
        with pytest.raises(ConnectionResetError, match="gone"):
            step_coroutine(resumed[0], resumed.append)

    asyncio.run(scenario())


def test_a_bare_yield_is_resumed_on_the_next_turn_of_the_loop() -> None:
    async def scenario() -> None:
        coro = asyncio.sleep(0)
        resumed: Resumed = []
        assert not step_coroutine(coro, resumed.append)
        assert resumed == []
        await asyncio.sleep(0)
        assert resumed == [coro]
        assert step_coroutine(coro, resumed.append)

    asyncio.run(scenario())


def test_anything_else_yielded_is_an_error_and_the_coroutine_is_closed() -> None:
    class Odd:
        def __await__(self) -> Any:
            yield "not a future"

    async def awaits_odd() -> None:
        await Odd()

    coro = awaits_odd()
    with pytest.raises(RuntimeError, match="not a future"):
        step_coroutine(coro, lambda _: None)
    assert coro.cr_frame is None


# -- aiohttp's writer, to a client with room and to one that does not read -----------------------------


def fill(response: web.StreamResponse) -> tuple[Coroutine[Any, Any, None], Any, int]:
    """Write BLOCKs by raw sends until one suspends: that write, what it yielded, the bytes written."""
    written = 0
    while written < NEVER_PARKS:
        coro = response.write(BLOCK)
        written += len(BLOCK)
        try:
            yielded = coro.send(None)
        except StopIteration:
            continue
        return coro, yielded, written
    raise AssertionError(
        f"aiohttp's StreamResponse.write() never suspended with {NEVER_PARKS} bytes unread by the client: "
        "it no longer waits for a slow client, and the relay would buffer without bound"
    )


@on_both_loops
async def test_aiohttp_write_to_a_client_with_room_ends_within_its_first_send() -> None:
    async with prepared_response() as (client, response):
        coro = response.write(b"data: 1\n\n")
        with pytest.raises(StopIteration):
            coro.send(None)
        resumed: Resumed = []
        assert step_coroutine(response.write(b"data: 2\n\n"), resumed.append), (
            "aiohttp's StreamResponse.write() suspended with the client's buffers empty: every relayed "
            "chunk would now park"
        )
        await response.write_eof()
        assert await client.read_body() == b"data: 1\n\ndata: 2\n\n"


@on_both_loops
async def test_aiohttp_write_to_a_full_client_yields_an_asyncio_future() -> None:
    async with prepared_response() as (client, response):
        coro, yielded, written = fill(response)
        assert asyncio.isfuture(yielded) and yielded._asyncio_future_blocking, (
            f"aiohttp's StreamResponse.write() to a full client yielded {yielded!r}, not an asyncio Future: "
            "step_coroutine would raise on every parked write"
        )
        reading = asyncio.ensure_future(client.read_body())
        # Cleared as a Task clears it, or awaiting the Future here would raise.
        yielded._asyncio_future_blocking = False
        async with asyncio.timeout(WAIT_S):
            await yielded
        with pytest.raises(StopIteration):
            coro.send(None)
        await response.write_eof()
        assert len(await reading) == written


@on_both_loops
async def test_a_parked_aiohttp_write_is_resumed_when_the_client_drains() -> None:
    async with prepared_response() as (client, response):
        resumed: asyncio.Future[Coroutine[Any, Any, Any]] = asyncio.get_running_loop().create_future()
        written = 0
        while step_coroutine(response.write(BLOCK), resumed.set_result):
            written += len(BLOCK)
            assert written < NEVER_PARKS, "aiohttp's StreamResponse.write() never suspended"
        written += len(BLOCK)
        await asyncio.sleep(0.01)
        assert not resumed.done(), "a parked write was resumed while the client read nothing"
        reading = asyncio.ensure_future(client.read_body())
        async with asyncio.timeout(WAIT_S):
            coro = await resumed
        assert step_coroutine(coro, resumed.set_result)
        await response.write_eof()
        assert await reading == BLOCK * (written // len(BLOCK))
