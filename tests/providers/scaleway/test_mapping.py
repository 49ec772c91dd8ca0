"""Vendor states through the tables, and recorded bodies into our dataclasses."""

from __future__ import annotations

from typing import Any

import pytest
from scaleway_bodies import (
    BOOT_VOLUME_ID,
    SCRATCH_VOLUME_ID,
    SERVER_ID,
    exchanges,
    recorded,
    server_body,
)

from providers.base import Availability, ServerState, VolumeState
from providers.scaleway import mapping


@pytest.mark.parametrize(
    ("vendor", "expected"),
    [
        ("stopped", ServerState.STOPPED),
        ("stopped in place", ServerState.STOPPED),
        ("starting", ServerState.STARTING),
        ("running", ServerState.RUNNING),
        ("stopping", ServerState.STOPPING),
        ("locked", ServerState.LOCKED),
        ("hibernating", ServerState.UNKNOWN),
    ],
)
def test_server_states(vendor: str, expected: ServerState) -> None:
    assert mapping.server_state(vendor) is expected


@pytest.mark.parametrize(
    ("vendor", "expected"),
    [
        ("creating", VolumeState.CREATING),
        ("available", VolumeState.AVAILABLE),
        ("in_use", VolumeState.IN_USE),
        ("deleting", VolumeState.DELETING),
        ("deleted", VolumeState.DELETED),
        ("error", VolumeState.ERROR),
        ("resizing", VolumeState.BUSY),
        ("snapshotting", VolumeState.BUSY),
        ("locked", VolumeState.BUSY),
        ("updating", VolumeState.BUSY),
        ("melting", VolumeState.UNKNOWN),
    ],
)
def test_volume_states(vendor: str, expected: VolumeState) -> None:
    assert mapping.volume_state(vendor) is expected


@pytest.mark.parametrize(
    ("vendor", "expected"),
    [("available", Availability.AVAILABLE), ("scarce", Availability.SCARCE), ("shortage", Availability.SHORTAGE),
     ("", Availability.UNKNOWN)],
)
def test_availability(vendor: str, expected: Availability) -> None:
    assert mapping.availability(vendor) is expected


def test_every_recorded_state_is_in_the_table() -> None:
    states = {e.body["server"]["state"] for e in exchanges("GET", f"/servers/{SERVER_ID}", 200) if "server" in e.body}
    assert states == {"stopped", "starting", "running", "stopping"}
    assert all(mapping.server_state(s) is not ServerState.UNKNOWN for s in states)
    volume_states = {e.body["status"] for e in exchanges("GET", "/block/v1/", 200)}
    assert all(mapping.volume_state(s) is not VolumeState.UNKNOWN for s in volume_states)


def test_created_server() -> None:
    server = mapping.server_from_body(recorded("create_server_response_L40S")["server"])
    assert (server.id, server.zone, server.commercial_type) == (SERVER_ID, "fr-par-2", "L40S-1-48G")
    assert server.state is ServerState.STOPPED and server.vendor_state == "stopped"
    assert server.allowed_actions == ("poweron", "backup")
    assert server.tags == ("terraform-test", "scaleway_instance_server", "scratch_storage")
    assert server.ip_address is None and server.worker_port is None
    boot, scratch = server.volumes
    # The root is slot "0" although the recording says "boot": false; sbs entries carry no size.
    assert (boot.id, boot.slot, boot.is_root, boot.volume_type, boot.size_bytes) == (
        BOOT_VOLUME_ID, "0", True, "sbs_volume", None)
    assert (scratch.id, scratch.slot, scratch.volume_type, scratch.size_bytes, scratch.name) == (
        SCRATCH_VOLUME_ID, "1", "scratch", 1_600_000_000_000, "tf-vol-recursing-cannon")
    assert server.created_at is not None and server.created_at.year == 2026


@pytest.mark.parametrize(
    ("state", "detail", "expected", "actions"),
    [
        ("starting", "allocating node", ServerState.STARTING, ("stop_in_place", "backup")),
        ("running", "booting kernel", ServerState.RUNNING, ("poweroff", "terminate", "reboot", "stop_in_place",
                                                             "backup")),
        ("stopping", "terminating", ServerState.STOPPING, ()),
    ],
)
def test_recorded_lifecycle(state: str, detail: str, expected: ServerState, actions: tuple[str, ...]) -> None:
    server = mapping.server_from_body(server_body(state, detail))
    assert server.state is expected and server.allowed_actions == actions


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"public_ips": [], "public_ip": None, "private_ip": None}, None),  # as recorded: no IP asked
        ({"public_ips": [{"address": "2001:db8::1", "family": "inet6"}, {"address": "203.0.113.5",
                                                                           "family": "inet"}]}, "203.0.113.5"),
        ({"public_ips": [{"address": "2001:db8::1", "family": "inet6"}]}, "2001:db8::1"),
        ({"public_ips": [], "public_ip": {"address": "203.0.113.6", "dynamic": True}}, "203.0.113.6"),
        ({"public_ips": [], "public_ip": None, "private_ip": "10.1.2.3"}, "10.1.2.3"),
    ],
)
def test_server_address(fields: dict[str, Any], expected: str | None) -> None:
    assert mapping.server_address({**server_body("running"), **fields}) == expected


def test_block_volume_attached_then_detached() -> None:
    attached = mapping.volume_from_body(recorded("block_volume_boot_attached"))
    assert (attached.state, attached.server_id, attached.size_bytes, attached.volume_type, attached.tags) == (
        VolumeState.IN_USE, SERVER_ID, 20_000_000_000, "sbs_5k", ())
    assert attached.name == "Ubuntu Jammy GPU OS 12 passthrough_sbs_volume_0"
    detached = mapping.volume_from_body(recorded("block_volume_after_terminate"))
    assert (detached.state, detached.server_id) == (VolumeState.AVAILABLE, None)


@pytest.mark.parametrize(("status", "holds"), [("attaching", True), ("attached", True), ("detaching", True),
                                                ("detached", False)])
def test_references_that_hold_a_volume(status: str, holds: bool) -> None:
    body = recorded("block_volume_boot_attached")
    body["references"][0]["status"] = status
    assert (mapping.holding_server(body) == SERVER_ID) is holds


def test_instance_volume() -> None:
    [created] = exchanges("POST", "/instance/v1/zones/fr-par-2/volumes")
    free = mapping.volume_from_instance_body(created.body["volume"])
    assert (free.state, free.server_id, free.volume_type, free.size_bytes) == (
        VolumeState.AVAILABLE, None, "scratch", 1_600_000_000_000)
    attached = mapping.volume_from_instance_body(server_body("stopped")["volumes"]["1"])
    assert (attached.state, attached.server_id) == (VolumeState.IN_USE, SERVER_ID)
