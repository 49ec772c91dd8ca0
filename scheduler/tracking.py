"""Tracking a cloud volume: the one mapping from what the cloud lists to an instance_volumes row.

Provisioning, reconciliation and release all record volumes they find; they differ only in whether the
volume should go with the instance, which they decide (`scheduler.volumes`) and pass in.
"""

from __future__ import annotations

import aiopg

from providers.base import AttachedVolume, Volume
from sql.queries import queries


async def track_volume(
    conn: aiopg.Connection, instance_id: str, volume: AttachedVolume | Volume, *, delete_on_terminate: bool
) -> None:
    """Record `volume` for the instance; tracking it again changes nothing already recorded.

    A volume a server lists is attached, in its slot, and the boot volume when in slot "0". A volume found
    on its own (created for the instance, or tagged for it) is recorded detached, with no slot: it is
    never the boot volume a server was created with.
    """
    slot: str | None = None
    is_boot = attached = False
    if isinstance(volume, AttachedVolume):
        slot, is_boot, attached = volume.slot, volume.is_root, True
    await queries.instance_volumes.track_volume(
        conn,
        instance_id=instance_id,
        provider_volume_id=volume.id,
        name=volume.name,
        volume_type=volume.volume_type,
        size_bytes=volume.size_bytes,
        slot=slot,
        is_boot=is_boot,
        delete_on_terminate=delete_on_terminate,
        attached=attached,
    )
