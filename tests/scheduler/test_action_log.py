from __future__ import annotations

import asyncio
from typing import Any

import pytest

from providers.base import QuotaExceeded
from scheduler import action_log
from scheduler.retry import StepFailed


async def test_a_step_is_one_row_opened_then_finished(db_pool: Any, db: Any, make_instance: Any) -> None:
    instance_id = await make_instance()
    async with action_log.logged(db_pool, instance_id, "PROVIDER_CREATE", zone="local-1") as action:
        (row,) = await db.actions(instance_id)
        assert row["status"] == "in_progress", "written before the step runs"
        await asyncio.sleep(0.01)
        action.metadata["server_id"] = "srv-1"

    (row,) = await db.actions(instance_id)
    assert row["status"] == "success" and row["error_code"] is None
    assert row["metadata"] == {"zone": "local-1", "server_id": "srv-1"}
    assert row["duration_ms"] >= 10


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            QuotaExceeded("Quota exceeded for this resource."),
            "PROVIDER_QUOTA_EXCEEDED",
            "Quota exceeded for this resource.",
        ),
        (StepFailed("MODEL_INACTIVE", "model m is not active"), "MODEL_INACTIVE", "model m is not active"),
        (ZeroDivisionError("division by zero"), "INTERNAL_ERROR", "ZeroDivisionError: division by zero"),
    ],
)
async def test_a_failed_step_records_its_error_and_raises_it(
    db_pool: Any, db: Any, make_instance: Any, error: Exception, code: str, message: str
) -> None:
    instance_id = await make_instance()
    with pytest.raises(type(error)):
        async with action_log.logged(db_pool, instance_id, "PROVIDER_START"):
            raise error
    (row,) = await db.actions(instance_id)
    assert (row["status"], row["error_code"], row["error_message"]) == ("failed", code, message)


async def test_a_span_is_reopened_by_later_passes_and_closed_once(db_pool: Any, db: Any, make_instance: Any) -> None:
    instance_id = await make_instance()
    first = await action_log.open_span(db_pool, instance_id, "HEALTH_CHECK", address="a:1")
    await asyncio.sleep(0.02)
    again = await action_log.open_span(db_pool, instance_id, "HEALTH_CHECK")
    assert again.id == first.id and again.elapsed_before_ms >= 20
    await action_log.close_span(db_pool, instance_id, "HEALTH_CHECK", model="m")
    await action_log.close_span(db_pool, instance_id, "HEALTH_CHECK")  # nothing open: nothing to do

    (row,) = await db.actions(instance_id)
    assert row["status"] == "success" and row["duration_ms"] >= 20
    assert row["metadata"] == {"address": "a:1", "model": "m"}


async def test_record_writes_a_finished_row_even_without_an_instance(db_pool: Any, db: Any) -> None:
    await action_log.record(db_pool, None, "ORPHAN_VOLUME_DELETE", error=QuotaExceeded("nope"), resource_id="v")
    (row,) = await db.rows("SELECT * FROM action_logs WHERE action_type = 'ORPHAN_VOLUME_DELETE'")
    assert (row["status"], row["error_code"], row["instance_id"], row["component"]) == (
        "failed", "PROVIDER_QUOTA_EXCEEDED", None, "scheduler",
    )  # fmt: skip
    assert row["metadata"] == {"resource_id": "v"} and row["completed_at"] is not None
