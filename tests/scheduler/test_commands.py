from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from memory_provider import MemoryProvider, serve_worker

from gateway.control.notify import send_scheduler_command
from inventiv import redis_keys
from inventiv.settings import Settings
from scheduler.commands import BadCommand, CommandConsumer, parse_command
from scheduler.driver import Driver

INSTANCE = "8c0e1f6a-58a4-4f34-a0c9-7f4c6f3f58e1"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({b"type": b"PROVISION", b"instance_id": INSTANCE.encode(), b"requested_at": b"x"}, ("PROVISION", INSTANCE)),
        ({"type": "TERMINATE", "instance_id": INSTANCE.upper()}, ("TERMINATE", INSTANCE)),
    ],
)
def test_parse_command(fields: dict[Any, Any], expected: tuple[str, str]) -> None:
    assert parse_command(fields) == expected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({b"type": b"REBOOT", b"instance_id": INSTANCE.encode()}, "unknown command type 'REBOOT'"),
        ({b"instance_id": INSTANCE.encode()}, "unknown command type None"),
        ({b"type": b"PROVISION", b"instance_id": b"42"}, "'42' is not a UUID"),
        ({b"type": b"PROVISION"}, "'' is not a UUID"),
    ],
)
def test_bad_commands_say_what_is_wrong(fields: dict[Any, Any], message: str) -> None:
    with pytest.raises(BadCommand, match=message):
        parse_command(fields)


@pytest.fixture
async def provider() -> AsyncIterator[MemoryProvider]:
    async with serve_worker("Qwen/Qwen2.5-7B-Instruct") as address:
        yield MemoryProvider("mock", polls_to_running=0, worker_address=address)


@pytest.fixture
def consumer(rt: Any, driver: Driver) -> CommandConsumer:
    return CommandConsumer(rt, driver, name="test-consumer", block_ms=10)


async def send(redis: Any, settings: Any, kind: str, instance_id: str) -> None:
    await redis.xadd(
        redis_keys.key(settings, redis_keys.SCHEDULER_COMMANDS),
        {"type": kind, "instance_id": instance_id, "requested_at": "2026-01-01T00:00:00Z"},
        maxlen=redis_keys.SCHEDULER_COMMANDS_MAXLEN,
        approximate=True,
    )


async def pending(redis: Any, consumer: CommandConsumer) -> int:
    info = await redis.xpending(consumer.stream, consumer.group)
    return int(info["pending"])


async def test_a_provision_command_runs_a_pass_then_is_acked(
    consumer: CommandConsumer, redis: Any, rt: Any, make_instance: Any, db: Any, db_pool: Any
) -> None:
    await consumer.ensure_group()
    await consumer.ensure_group()  # a second scheduler (or a restart) finds the group there
    instance_id = await make_instance()
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        # Not due for a while: only the command can make it run now.
        await cur.execute("UPDATE instances SET next_attempt_at = now() + interval '1 hour' WHERE id = %s",
                          (instance_id,))  # fmt: skip
    await send(redis, rt.settings, "PROVISION", instance_id)

    assert await consumer.poll() == 1
    await consumer.settle()

    assert (await db.instance(instance_id))["status"] == "ready"
    assert await pending(redis, consumer) == 0


async def test_a_terminate_command_cuts_a_backoff_short(
    consumer: CommandConsumer, redis: Any, rt: Any, make_instance: Any, drive: Any, db: Any, db_pool: Any,
    terminate: Any,
) -> None:  # fmt: skip
    instance_id = await make_instance()
    await drive(instance_id, "ready")
    await terminate(instance_id)
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("UPDATE instances SET next_attempt_at = now() + interval '1 hour' WHERE id = %s",
                          (instance_id,))  # fmt: skip
    await send(redis, rt.settings, "TERMINATE", instance_id)

    await consumer.poll()
    await consumer.settle()

    row = await db.instance(instance_id)
    assert row["status"] == "terminating", "the pass terminated the server and now waits for the cloud"
    assert "PROVIDER_TERMINATE" in await db.action_types(instance_id)


async def test_bad_commands_are_logged_and_acked(
    consumer: CommandConsumer, redis: Any, rt: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await consumer.ensure_group()
    await send(redis, rt.settings, "REBOOT", INSTANCE)
    await send(redis, rt.settings, "PROVISION", "not-a-uuid")
    await send(redis, rt.settings, "PROVISION", INSTANCE)  # no such row: nothing to do

    with caplog.at_level(logging.WARNING, logger="scheduler.commands"):
        assert await consumer.poll() == 1
    await consumer.settle()

    assert await pending(redis, consumer) == 0
    assert [r.message for r in caplog.records] == ["ignoring a bad scheduler command"] * 2


async def test_entries_left_pending_by_a_dead_consumer_are_taken_over(
    rt: Any, driver: Driver, redis: Any, make_instance: Any, db: Any
) -> None:
    dead = CommandConsumer(rt, driver, name="dead", block_ms=10)
    await dead.ensure_group()
    instance_id = await make_instance()
    await send(redis, rt.settings, "PROVISION", instance_id)
    # The dead consumer read the entry and died before its pass.
    await redis.xreadgroup(dead.group, dead.name, {dead.stream: ">"}, count=10)
    assert await pending(redis, dead) == 1

    alive = CommandConsumer(rt, driver, name="alive", block_ms=10, reclaim_idle_ms=0)
    assert await alive.poll() == 1
    await alive.settle()

    assert await pending(redis, alive) == 0
    assert (await db.instance(instance_id))["status"] == "ready"


async def test_redis_down_is_a_warning_not_a_crash(rt: Any, driver: Driver, caplog: pytest.LogCaptureFixture) -> None:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    broken = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    rt.redis = broken
    try:
        with caplog.at_level(logging.WARNING, logger="scheduler.commands"):
            assert await CommandConsumer(rt, driver, name="c", block_ms=10).poll() == 0
    finally:
        await broken.aclose()
    assert "command stream unavailable" in caplog.text


async def test_a_stream_deleted_under_the_consumer_is_made_again(
    consumer: CommandConsumer, redis: Any, rt: Any, make_instance: Any, db: Any
) -> None:
    await consumer.ensure_group()
    await redis.delete(consumer.stream)
    assert await consumer.poll() == 0  # NOGROUP: noted
    instance_id = await make_instance()
    await consumer.poll()  # the group is made again
    await send(redis, rt.settings, "PROVISION", instance_id)

    assert await consumer.poll() == 1
    await consumer.settle()
    assert await pending(redis, consumer) == 0


@pytest.mark.parametrize("command", list(redis_keys.SchedulerCommand))
async def test_what_the_control_api_sends_is_what_the_scheduler_reads(
    redis: aioredis.Redis, settings: Settings, command: redis_keys.SchedulerCommand
) -> None:
    assert await send_scheduler_command(redis, settings, command, INSTANCE)
    entries = await redis.xrange(redis_keys.key(settings, redis_keys.SCHEDULER_COMMANDS))
    [(_, fields)] = entries
    parsed, instance_id = parse_command(fields)
    assert (parsed, instance_id) == (command, INSTANCE)
    assert isinstance(parsed, redis_keys.SchedulerCommand)
