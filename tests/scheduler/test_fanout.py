from __future__ import annotations

import asyncio

import pytest

from scheduler.fanout import fan_out


async def test_results_keep_the_items_order_whatever_finishes_first() -> None:
    async def slow_for_small(n: int) -> int:
        await asyncio.sleep(0.001 * (5 - n))
        return n * 10

    assert await fan_out([1, 2, 3, 4], slow_for_small, limit=4) == [10, 20, 30, 40]


@pytest.mark.parametrize(("items", "limit"), [(10, 1), (10, 3), (3, 8)])
async def test_never_more_than_the_limit_at_once(items: int, limit: int) -> None:
    running = peak = 0

    async def work(_: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1

    await fan_out(range(items), work, limit=limit)
    assert peak == min(items, limit)


async def test_no_items_no_work() -> None:
    async def never(_: int) -> int:
        raise AssertionError("called")

    assert await fan_out([], never, limit=2) == []


async def test_a_limit_below_one_is_refused() -> None:
    async def work(n: int) -> int:
        return n

    with pytest.raises(ValueError, match="at least 1"):
        await fan_out([1], work, limit=0)


async def test_an_error_in_one_item_reaches_the_caller() -> None:
    async def work(n: int) -> int:
        if n == 2:
            raise RuntimeError("item 2")
        return n

    with pytest.raises(RuntimeError, match="item 2"):
        await fan_out([1, 2, 3], work, limit=2)
