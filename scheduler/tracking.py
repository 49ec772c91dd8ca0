"""Tracking a cloud volume: the one mapping from what the cloud lists to an instance_volumes row.

Provisioning, reconciliation and release all record volumes they find; they differ only in whether the
volume should go with the instance, which they decide (`scheduler.volumes`) and pass in. A server's
listing may leave out what the row records (`described` asks the volume API for it).
"""

from __future__ import annotations

import aiopg

from providers.base import AttachedVolume, Provider, Volume
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


async def described(provider: Provider, zone: str, volume: AttachedVolume) -> AttachedVolume:
    """The volume as its server lists it, with the size and name the listing left out (Scaleway's sbs
    entries say neither) asked of the volume API; as listed when the cloud has no such volume."""
    if volume.size_bytes is not None and volume.name is not None:
        return volume
    found = await provider.get_volume(zone, volume.id)
    if found is None:
        return volume
    size = volume.size_bytes if volume.size_bytes is not None else found.size_bytes
    return AttachedVolume(volume.id, volume.slot, volume.volume_type, size, volume.name or found.name)
