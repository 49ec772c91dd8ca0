from __future__ import annotations

from datetime import datetime
from typing import Any

from benchmarks.scheduler_passes import StatementCounter
from scheduler.work import load_work


async def test_load_work_reads_the_row_and_its_volumes_boot_first_with_their_times(
    make_instance: Any, db: Any, rt: Any
) -> None:
    instance_id = await make_instance(data_volume_gb=40)
    await db.rows(
        "INSERT INTO instance_volumes (instance_id, provider_volume_id, name, volume_type, is_boot, attached_at, "
        "detached_at) VALUES (%s, 'vol-data', 'data', 'sbs', false, now(), now()), "
        "(%s, 'vol-boot', NULL, 'sbs', true, now(), NULL) RETURNING id",
        instance_id, instance_id,
    )  # fmt: skip

    with StatementCounter() as statements:
        work = await load_work(rt.pool, rt.settings, instance_id)

    assert statements.count == 1, "the row and its volumes in one statement: it is read after every step"
    assert work is not None and (work.id, work.status, work.data_volume_gb) == (instance_id, "provisioning", 40)
    boot, data = work.volumes
    assert (boot.provider_volume_id, boot.is_boot, boot.name) == ("vol-boot", True, None)
    assert (data.provider_volume_id, data.is_boot, data.name) == ("vol-data", False, "data")
    assert isinstance(data.attached_at, datetime) and data.attached_at.tzinfo is not None
    assert isinstance(data.detached_at, datetime) and boot.detached_at is None and data.deleted_at is None
    assert not data.recorded_attached and boot.recorded_attached


async def test_load_work_of_an_instance_without_volumes_or_row(make_instance: Any, rt: Any) -> None:
    work = await load_work(rt.pool, rt.settings, await make_instance())
    assert work is not None and work.volumes == ()
    assert await load_work(rt.pool, rt.settings, "00000000-0000-0000-0000-000000000000") is None
