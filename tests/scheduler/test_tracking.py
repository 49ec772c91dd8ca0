from __future__ import annotations

from typing import Any

import aiopg
import pytest

from providers.base import GB, AttachedVolume, Volume, VolumeState
from scheduler.tracking import track_volume


@pytest.mark.parametrize(
    ("volume", "expected"),
    [
        (
            AttachedVolume("vol-root", "0", "sbs_volume", 20 * GB, "root"),
            {"slot": "0", "is_boot": True, "attached": True, "name": "root", "size_bytes": 20 * GB},
        ),
        (
            AttachedVolume("vol-scratch", "1", "scratch", None, None),
            {"slot": "1", "is_boot": False, "attached": True, "name": None, "size_bytes": None},
        ),
        (
            Volume("vol-data", "inst-data", "local-1", "sbs_volume", 200 * GB, VolumeState.AVAILABLE),
            {"slot": None, "is_boot": False, "attached": False, "name": "inst-data", "size_bytes": 200 * GB},
        ),
    ],
)
async def test_a_volume_is_recorded_as_the_cloud_lists_it(
    make_instance: Any, db: Any, db_pool: aiopg.Pool, volume: AttachedVolume | Volume, expected: dict[str, Any]
) -> None:
    instance_id = await make_instance()
    async with db_pool.acquire() as conn:
        await track_volume(conn, instance_id, volume, delete_on_terminate=False)

    (row,) = await db.volumes(instance_id)
    assert row["provider_volume_id"] == volume.id and row["volume_type"] == volume.volume_type
    assert row["delete_on_terminate"] is False
    got = {k: row[k] for k in ("slot", "is_boot", "name", "size_bytes")} | {"attached": row["attached_at"] is not None}
    assert got == expected


async def test_tracking_again_keeps_what_was_recorded_and_fills_in_what_was_unknown(
    make_instance: Any, db: Any, db_pool: aiopg.Pool
) -> None:
    instance_id = await make_instance()
    async with db_pool.acquire() as conn:
        await track_volume(conn, instance_id, AttachedVolume("vol-1", "0", "sbs_volume"), delete_on_terminate=True)
        (first,) = await db.volumes(instance_id)
        await track_volume(
            conn, instance_id, AttachedVolume("vol-1", "0", "sbs_volume", 20 * GB, "root"), delete_on_terminate=False
        )

    (row,) = await db.volumes(instance_id)
    assert row["attached_at"] == first["attached_at"]
    assert row["size_bytes"] == 20 * GB and row["name"] == "root"
    assert row["delete_on_terminate"] is True, "the first decision stands"
