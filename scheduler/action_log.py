"""The `action_logs` rows of the scheduler's steps: opened `in_progress`, finished with their outcome.

`logged()` wraps one step: the row is written before the step runs (so a step that hangs or crashes
shows as in progress), then finished with `success` or `failed`, the duration and, on failure, the
error's code and message. The step adds what it learnt to `action.metadata` (ids, sizes, states).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiopg
import orjson

from inventiv.action_types import ActionType
from scheduler.retry import error_fields
from sql.queries import queries


@dataclass
class Action:
    id: str
    instance_id: str | None
    action_type: ActionType
    metadata: dict[str, Any] = field(default_factory=dict)
    # Milliseconds already spent before this pass (a span reopened by a later pass).
    elapsed_before_ms: int = 0
    started: float = field(default_factory=time.monotonic)

    def duration_ms(self) -> int:
        return self.elapsed_before_ms + int((time.monotonic() - self.started) * 1000)


# Steps logged as one row across many passes (see open_span); every other open row dies with its pass.
SPAN_TYPES = (ActionType.HEALTH_CHECK, ActionType.EXECUTE_TERMINATE, ActionType.EXECUTE_CLEANUP)


def _json(metadata: dict[str, Any] | None) -> str | None:
    return orjson.dumps(metadata, default=str).decode() if metadata else None


async def start(
    pool: aiopg.Pool, instance_id: str | None, action_type: ActionType, metadata: dict[str, Any] | None = None
) -> Action:
    async with pool.acquire() as conn:
        action_id = await queries.action_logs.start_scheduler_action(
            conn, instance_id=instance_id, action_type=action_type, metadata=_json(metadata)
        )
    return Action(str(action_id), instance_id, action_type, dict(metadata or {}))


async def finish(pool: aiopg.Pool, action: Action, error: BaseException | None = None) -> None:
    code, message = error_fields(error) if error is not None else (None, None)
    async with pool.acquire() as conn:
        await queries.action_logs.finish_scheduler_action(
            conn,
            action_id=action.id,
            status="failed" if error is not None else "success",
            error_code=code,
            error_message=message,
            metadata=_json(action.metadata),
            duration_ms=action.duration_ms(),
        )


@asynccontextmanager
async def logged(
    pool: aiopg.Pool, instance_id: str | None, action_type: ActionType, **metadata: Any
) -> AsyncIterator[Action]:
    """One step as one row. The step's exception is recorded and re-raised."""
    action = await start(pool, instance_id, action_type, metadata)
    try:
        yield action
    except Exception as exc:
        await finish(pool, action, exc)
        raise
    await finish(pool, action)


async def open_span(pool: aiopg.Pool, instance_id: str, action_type: ActionType, **metadata: Any) -> Action:
    """The open row of a step that spans many passes, opened now if there is none."""
    async with pool.acquire() as conn:
        row = await queries.action_logs.get_open_scheduler_action(
            conn, instance_id=instance_id, action_type=action_type
        )
    if row is None:
        return await start(pool, instance_id, action_type, metadata)
    return Action(str(row["id"]), instance_id, action_type, dict(metadata), elapsed_before_ms=row["elapsed_ms"])


async def close_span(
    pool: aiopg.Pool, instance_id: str, action_type: ActionType, error: BaseException | None = None, **metadata: Any
) -> None:
    """Finish the open row of a long step, if one is open (a span never opened has nothing to close)."""
    async with pool.acquire() as conn:
        row = await queries.action_logs.get_open_scheduler_action(
            conn, instance_id=instance_id, action_type=action_type
        )
    if row is not None:
        span = Action(str(row["id"]), instance_id, action_type, dict(metadata), elapsed_before_ms=row["elapsed_ms"])
        await finish(pool, span, error)


async def record(
    pool: aiopg.Pool,
    instance_id: str | None,
    action_type: ActionType,
    *,
    error: BaseException | None = None,
    duration_ms: int = 0,
    **metadata: Any,
) -> None:
    """A finished row for something done in one go (a sweep deletion, a reconciliation finding)."""
    code, message = error_fields(error) if error is not None else (None, None)
    async with pool.acquire() as conn:
        await queries.action_logs.record_scheduler_action(
            conn,
            instance_id=instance_id,
            action_type=action_type,
            status="failed" if error is not None else "success",
            error_code=code,
            error_message=message,
            metadata=_json(metadata),
            duration_ms=duration_ms,
        )


async def close_interrupted(pool: aiopg.Pool, instance_id: str) -> None:
    """Fail the step rows a dead pass left open (called as a pass starts, while it owns the instance)."""
    async with pool.acquire() as conn:
        await queries.action_logs.close_interrupted_scheduler_actions(
            conn, instance_id=instance_id, span_types=list(SPAN_TYPES)
        )
