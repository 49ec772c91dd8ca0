"""Scaleway bodies -> our dataclasses, with the vendor states mapped through explicit tables."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar

from providers.base import AttachedVolume, Availability, Server, ServerState, Volume, VolumeState

R = TypeVar("R", Server, Volume)

# Instance API server states. "stopped in place" keeps the node reserved (and billed) but runs nothing.
SERVER_STATES: dict[str, ServerState] = {
    "stopped": ServerState.STOPPED,
    "stopped in place": ServerState.STOPPED,
    "starting": ServerState.STARTING,
    "running": ServerState.RUNNING,
    "stopping": ServerState.STOPPING,
    "locked": ServerState.LOCKED,
}

# Block API volume statuses.
VOLUME_STATES: dict[str, VolumeState] = {
    "creating": VolumeState.CREATING,
    "available": VolumeState.AVAILABLE,
    "in_use": VolumeState.IN_USE,
    "deleting": VolumeState.DELETING,
    "deleted": VolumeState.DELETED,
    "error": VolumeState.ERROR,
    "resizing": VolumeState.BUSY,
    "snapshotting": VolumeState.BUSY,
    "locked": VolumeState.BUSY,
    "updating": VolumeState.BUSY,
}

# Instance API (l_ssd, scratch) volume states; "available" says nothing about attachment there.
INSTANCE_VOLUME_STATES: dict[str, VolumeState] = {
    "available": VolumeState.AVAILABLE,
    "snapshotting": VolumeState.BUSY,
    "fetching": VolumeState.BUSY,
    "resizing": VolumeState.BUSY,
    "saving": VolumeState.BUSY,
    "hotsyncing": VolumeState.BUSY,
    "error": VolumeState.ERROR,
}

AVAILABILITY: dict[str, Availability] = {
    "available": Availability.AVAILABLE,
    "scarce": Availability.SCARCE,
    "shortage": Availability.SHORTAGE,
}

# A Block volume reference in these statuses still holds the volume (it cannot be deleted yet).
HOLDING_REFERENCE_STATUSES = frozenset({"attaching", "attached", "detaching"})


def server_state(vendor: str) -> ServerState:
    return SERVER_STATES.get(vendor, ServerState.UNKNOWN)


def volume_state(vendor: str) -> VolumeState:
    return VOLUME_STATES.get(vendor, VolumeState.UNKNOWN)


def availability(vendor: str) -> Availability:
    return AVAILABILITY.get(vendor, Availability.UNKNOWN)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def server_address(body: dict[str, Any]) -> str | None:
    """The address the worker is reached at: the first public IPv4, else any public IP, else the private one."""
    public_ips = [ip for ip in body.get("public_ips") or [] if ip.get("address")]
    for ip in public_ips:
        if ip.get("family", "inet") == "inet":
            return str(ip["address"])
    if public_ips:
        return str(public_ips[0]["address"])
    legacy = body.get("public_ip")
    if isinstance(legacy, dict) and legacy.get("address"):
        return str(legacy["address"])
    private = body.get("private_ip")
    return str(private) if private else None


def attached_volumes(body: dict[str, Any]) -> tuple[AttachedVolume, ...]:
    """The server's volumes by slot. The root is slot "0": every recording had `"boot": false` on it."""
    volumes = body.get("volumes") or {}
    return tuple(
        AttachedVolume(
            id=entry["id"],
            slot=slot,
            volume_type=entry.get("volume_type", ""),
            # sbs entries carry neither size nor name: the Block API has them.
            size_bytes=entry.get("size"),
            name=entry.get("name"),
        )
        for slot, entry in sorted(volumes.items(), key=lambda item: int(item[0]))
    )


def server_from_body(body: dict[str, Any]) -> Server:
    vendor = body.get("state", "")
    return Server(
        id=body["id"],
        name=body.get("name", ""),
        zone=body.get("zone", ""),
        commercial_type=body.get("commercial_type", ""),
        state=server_state(vendor),
        tags=tuple(body.get("tags") or ()),
        volumes=attached_volumes(body),
        ip_address=server_address(body),
        created_at=parse_time(body.get("creation_date")),
        vendor_state=vendor,
        allowed_actions=tuple(body.get("allowed_actions") or ()),
    )


def holding_server(body: dict[str, Any]) -> str | None:
    """The server a Block volume is attached (or attaching, or detaching) to."""
    for ref in body.get("references") or ():
        if ref.get("product_resource_type") == "instance_server" and ref.get("status") in HOLDING_REFERENCE_STATUSES:
            return str(ref["product_resource_id"])
    return None


def volume_from_body(body: dict[str, Any]) -> Volume:
    """A Block API volume."""
    return Volume(
        id=body["id"],
        name=body.get("name", ""),
        zone=body.get("zone", ""),
        volume_type=body.get("type", ""),
        size_bytes=body.get("size"),
        state=volume_state(body.get("status", "")),
        tags=tuple(body.get("tags") or ()),
        server_id=holding_server(body),
        created_at=parse_time(body.get("created_at")),
    )


def volume_from_instance_body(body: dict[str, Any]) -> Volume:
    """An Instance API volume (l_ssd, scratch): attached when it names a server."""
    server = body.get("server") or {}
    state = INSTANCE_VOLUME_STATES.get(body.get("state", ""), VolumeState.UNKNOWN)
    if state is VolumeState.AVAILABLE and server.get("id"):
        state = VolumeState.IN_USE
    return Volume(
        id=body["id"],
        name=body.get("name", ""),
        zone=body.get("zone", ""),
        volume_type=body.get("volume_type", ""),
        size_bytes=body.get("size"),
        state=state,
        tags=tuple(body.get("tags") or ()),
        server_id=server.get("id"),
        created_at=parse_time(body.get("creation_date")),
    )


def oldest_first(found: Iterable[R]) -> list[R]:
    """Resources by age, oldest first (unknown ages last): when a race made two, every caller adopts the
    same one."""
    return sorted(found, key=lambda r: (r.created_at is None, r.created_at.timestamp() if r.created_at else 0.0, r.id))
