"""The next step of an instance, decided from facts alone (the database row and what the cloud says).

Each pass of the driver gathers the facts, asks these functions what to do, performs that one step and
asks again, until the answer is to wait. Because the facts are re-read every time, a pass that died
half-way (crash, lost lease, cloud error) is simply resumed by the next one.

Provisioning: create the server → track its volumes → create and attach the data volume → power on
(status `booting`) → record the address → health-check until the worker serves its model (`ready`).
Release (status `terminating`, or `failed` with resources left): track every volume still attached,
detach the ones to keep, terminate the server, then delete or record each volume, then finish.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from providers.base import ServerState
from scheduler.volumes import VolumeAction


class Step(enum.Enum):
    CREATE_SERVER = "create_server"  # EXECUTE_CREATE then PROVIDER_CREATE (or adopt)
    DISCOVER_VOLUMES = "discover_volumes"
    CREATE_DATA_VOLUME = "create_data_volume"
    ATTACH_DATA_VOLUME = "attach_data_volume"
    POWER_ON = "power_on"
    RECORD_ADDRESS = "record_address"
    HEALTH_CHECK = "health_check"
    WAIT = "wait"
    FAIL_TIMEOUT = "fail_timeout"
    FAIL_SERVER_GONE = "fail_server_gone"
    FAIL_SERVER_ERROR = "fail_server_error"


@dataclass(frozen=True, slots=True)
class ProvisioningFacts:
    """An instance in status `provisioning`: nothing has been started yet."""

    deadline_passed: bool
    has_server: bool
    boot_volume_tracked: bool
    data_volume_gb: int
    data_volume_tracked: bool
    data_volume_attached: bool


def next_provisioning_step(facts: ProvisioningFacts) -> Step:
    if facts.deadline_passed:
        return Step.FAIL_TIMEOUT
    if not facts.has_server:
        return Step.CREATE_SERVER
    if not facts.boot_volume_tracked:
        return Step.DISCOVER_VOLUMES
    if facts.data_volume_gb > 0 and not facts.data_volume_tracked:
        return Step.CREATE_DATA_VOLUME
    if facts.data_volume_tracked and not facts.data_volume_attached:
        return Step.ATTACH_DATA_VOLUME
    return Step.POWER_ON


@dataclass(frozen=True, slots=True)
class BootingFacts:
    """An instance in status `booting`: powered on, waiting for its address and its worker."""

    deadline_passed: bool
    # None: the cloud has no such server any more.
    server_state: ServerState | None
    server_ip: str | None
    # The row already holds the server's address and port.
    address_recorded: bool


# States a booting server passes through on its own; anything else is a failure or a wait for the deadline.
_ON_ITS_WAY = (ServerState.STOPPED, ServerState.STARTING, ServerState.STOPPING, ServerState.LOCKED, ServerState.UNKNOWN)


def next_booting_step(facts: BootingFacts) -> Step:
    if facts.deadline_passed:
        return Step.FAIL_TIMEOUT
    if facts.server_state is None:
        return Step.FAIL_SERVER_GONE
    if facts.server_state is ServerState.ERROR:
        return Step.FAIL_SERVER_ERROR
    # A power-on the cloud accepted can still show `stopped` for a moment, so stopped is waited on, not
    # powered on again; a server that never starts is failed (and cleaned up) at the deadline.
    if facts.server_state in _ON_ITS_WAY or facts.server_ip is None:
        return Step.WAIT
    if not facts.address_recorded:
        return Step.RECORD_ADDRESS
    return Step.HEALTH_CHECK


class ReleaseStep(enum.Enum):
    TRACK_VOLUMES = "track_volumes"  # volumes nobody recorded yet (attached, or tagged after a crash)
    DETACH_KEPT = "detach_kept"  # volumes to keep leave the server before it goes
    TERMINATE = "terminate"
    WAIT = "wait"
    SETTLE_VOLUMES = "settle_volumes"  # delete, forget or record each tracked volume
    FINISH = "finish"


@dataclass(frozen=True, slots=True)
class ReleaseFacts:
    # States of the servers of this instance that still exist (by id, and by tag after a crash).
    server_states: Sequence[ServerState]
    # Volumes attached to those servers, or tagged with the instance, that no live row tracks yet.
    untracked: bool
    # Volumes to keep (persistent data) still attached to a server that is about to go.
    kept_attached: bool
    # One per live tracked volume; only consulted once every server is gone.
    volume_actions: Sequence[VolumeAction]


_SETTLING = (VolumeAction.DELETE, VolumeAction.FORGET, VolumeAction.MARK_DETACHED)


def next_release_step(facts: ReleaseFacts) -> ReleaseStep:
    if facts.untracked:
        return ReleaseStep.TRACK_VOLUMES
    if facts.server_states:
        if facts.kept_attached:
            return ReleaseStep.DETACH_KEPT
        if all(state is ServerState.STOPPING for state in facts.server_states):
            return ReleaseStep.WAIT
        return ReleaseStep.TERMINATE
    if any(action in _SETTLING for action in facts.volume_actions):
        return ReleaseStep.SETTLE_VOLUMES
    if VolumeAction.WAIT in facts.volume_actions:
        return ReleaseStep.WAIT
    return ReleaseStep.FINISH
