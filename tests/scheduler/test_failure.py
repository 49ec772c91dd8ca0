"""fail_instance: the instance is marked failed once, with the error's code, and the failure is logged once."""

from __future__ import annotations

from typing import Any

from scheduler.failure import fail_instance
from scheduler.retry import StepFailed
from scheduler.runtime import Runtime


async def test_an_instance_is_failed_once_with_the_errors_code(rt: Runtime, make_instance: Any, db: Any) -> None:
    instance_id = await make_instance()

    await fail_instance(rt, instance_id, StepFailed("BY_HAND", "failed for the test"))
    await fail_instance(rt, instance_id, StepFailed("AGAIN", "already failed"))

    row = await db.instance(instance_id)
    assert (row["status"], row["error_code"]) == ("failed", "BY_HAND")
    assert (await db.action_types(instance_id)).count("INSTANCE_FAILED") == 1
