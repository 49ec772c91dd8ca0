"""The scheduler's command stream: PROVISION and TERMINATE entries, read through a consumer group.

A command only wakes an instance: the pass it triggers reads everything from Postgres, and the interval
driver finds the same work if a command is lost. An entry is acknowledged once its pass has run (its
steps are recorded), so a scheduler that dies mid-command leaves it pending, and whoever leads next
claims it after a while and runs it again, which is harmless. Passes run in the background: reading
the stream never waits on a cloud.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import Any

from redis.exceptions import RedisError, ResponseError

from inventiv import redis_keys
from inventiv.redis_keys import SchedulerCommand
from scheduler.driver import Driver
from scheduler.runtime import Runtime

log = logging.getLogger(__name__)

# Entries read per call: a burst of deployments is handled in one go.
_BATCH = 64
# How long one read blocks waiting for a command; below the Redis client's 2 s socket timeout.
_BLOCK_MS = 1000
# Pending entries of a consumer silent this long (a dead scheduler) are taken over.
_RECLAIM_IDLE_MS = 60_000


class BadCommand(ValueError):
    pass


def parse_command(fields: dict[Any, Any]) -> tuple[SchedulerCommand, str]:
    """(type, instance id) from a stream entry's fields; BadCommand says what is wrong."""
    decoded = {_text(k): _text(v) for k, v in fields.items()}
    try:
        command = SchedulerCommand(decoded["type"])
    except (KeyError, ValueError):
        raise BadCommand(f"unknown command type {decoded.get('type')!r}") from None
    raw_id = decoded.get("instance_id", "")
    try:
        return command, str(uuid.UUID(raw_id))
    except ValueError:
        raise BadCommand(f"instance_id {raw_id!r} is not a UUID") from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class CommandConsumer:
    def __init__(
        self,
        rt: Runtime,
        driver: Driver,
        name: str | None = None,
        block_ms: int = _BLOCK_MS,
        reclaim_idle_ms: int = _RECLAIM_IDLE_MS,
    ) -> None:
        self.rt = rt
        self.driver = driver
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.block_ms = block_ms
        self.reclaim_idle_ms = reclaim_idle_ms
        self.stream = redis_keys.key(rt.settings, redis_keys.SCHEDULER_COMMANDS)
        self.group = redis_keys.SCHEDULER_GROUP
        self._group_ready = False
        # Kept referenced until done: the event loop holds only weak references to tasks.
        self._acks: set[asyncio.Task[None]] = set()

    async def ensure_group(self) -> None:
        try:
            await self.rt.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def poll(self) -> int:
        """Handle what was left pending by a dead consumer, then wait briefly for new commands."""
        try:
            if not self._group_ready:
                await self.ensure_group()
            handled = await self._handle(await self._reclaimed())
            response: Any = await self.rt.redis.xreadgroup(
                self.group, self.name, {self.stream: ">"}, count=_BATCH, block=self.block_ms
            )
        except (RedisError, OSError) as exc:
            # A stream deleted under us (FLUSHALL, a new Redis) loses its group: make it again next time.
            self._group_ready = self._group_ready and "NOGROUP" not in str(exc)
            log.warning("command stream unavailable", extra={"error": str(exc)})
            return 0
        for _stream, entries in response or []:
            handled += await self._handle(entries)
        return handled

    async def _reclaimed(self) -> list[tuple[Any, dict[Any, Any]]]:
        result: Any = await self.rt.redis.xautoclaim(
            self.stream, self.group, self.name, min_idle_time=self.reclaim_idle_ms, start_id="0-0", count=_BATCH
        )
        return [entry for entry in result[1] if entry[1] is not None]

    async def _handle(self, entries: list[tuple[Any, dict[Any, Any]]]) -> int:
        """Start a pass for each commanded instance; the entries are acked once those passes are done.

        The job returns at once, so a slow cloud call never holds up the next read.
        """
        if not entries:
            return 0
        # One command per instance per batch: a PROVISION then TERMINATE of one instance is one pass.
        wanted: dict[str, SchedulerCommand] = {}
        for entry_id, fields in entries:
            try:
                kind, instance_id = parse_command(fields)
            except BadCommand as exc:
                log.warning("ignoring a bad scheduler command", extra={"entry": _text(entry_id), "error": str(exc)})
                continue
            wanted[instance_id] = kind
        passes = [task for task in [await self.driver.start(i) for i in wanted] if task is not None]
        self._acks.add(self._spawn_ack(passes, [entry_id for entry_id, _ in entries]))
        return len(wanted)

    def _spawn_ack(self, passes: list[asyncio.Task[None]], entry_ids: list[Any]) -> asyncio.Task[None]:
        task = asyncio.create_task(self._ack_after(passes, entry_ids))
        task.add_done_callback(self._acks.discard)
        return task

    async def _ack_after(self, passes: list[asyncio.Task[None]], entry_ids: list[Any]) -> None:
        await asyncio.gather(*passes, return_exceptions=True)
        try:
            await self.rt.redis.xack(self.stream, self.group, *entry_ids)
        except (RedisError, OSError) as exc:
            # Left pending: taken over again later, which only wakes the instances once more.
            log.warning("could not ack scheduler commands", extra={"error": str(exc)})

    async def settle(self) -> None:
        """Wait until every command read so far has been handled and acked."""
        while self._acks:
            await asyncio.gather(*list(self._acks))
