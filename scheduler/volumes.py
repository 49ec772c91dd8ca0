"""Volume decisions: how big the data volume is, and what to do with each tracked volume.

Pure functions; provisioning, termination and reconciliation perform what they decide.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Self

from providers.base import AttachedVolume, VolumeState

# Data volume size by model size: weights in fp16 take 2 bytes a parameter, and the volume also holds the
# HF cache's second copy, converted checkpoints and a few models swapped in later, so about ten times the
# weights, rounded to the sizes operators buy (a 7B model gets 200 GB, as the original deployments did).
_SIZE_TIERS_GB = ((3 * 10**9, 100), (10 * 10**9, 200), (20 * 10**9, 300), (40 * 10**9, 500), (80 * 10**9, 1000))
_LARGEST_GB = 2000
# A model of unknown size is most likely a 7B-class one: size it like one.
_UNKNOWN_SIZE_GB = 200


def heuristic_data_volume_gb(parameter_count: int | None) -> int:
    if parameter_count is None:
        return _UNKNOWN_SIZE_GB
    for below, size in _SIZE_TIERS_GB:
        if parameter_count <= below:
            return size
    return _LARGEST_GB


def data_volume_gb(
    *,
    forced: int | None,
    requested: int | None,
    model_gb: int | None,
    provider_default: int | None,
    parameter_count: int | None,
) -> int:
    """The data volume size in GB, 0 for none.

    WORKER_DATA_VOLUME_GB forces every instance; then what the deployment asked; the model's own size;
    the provider's default; the heuristic from the parameter count.
    """
    for choice in (forced, requested, model_gb, provider_default):
        if choice is not None:
            if choice < 0:
                raise ValueError(f"a data volume size cannot be negative ({choice} GB)")
            return choice
    return heuristic_data_volume_gb(parameter_count)


@dataclass(frozen=True, slots=True)
class TrackedVolume:
    """An instance_volumes row, as the decisions need it."""

    provider_volume_id: str
    is_boot: bool
    delete_on_terminate: bool
    name: str | None = None
    attached_at: datetime | None = None
    detached_at: datetime | None = None
    deleted_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    @property
    def live(self) -> bool:
        """Not marked deleted."""
        return self.deleted_at is None

    @property
    def recorded_attached(self) -> bool:
        return self.attached_at is not None and self.detached_at is None


def untracked(tracked: Iterable[TrackedVolume], attached: Sequence[AttachedVolume]) -> list[AttachedVolume]:
    """Attached volumes with no tracking row at all.

    A row marked deleted still counts: a cloud that lists a deleted volume for a while (Scaleway shows it
    `deleting`) must not get it tracked, and deleted, over and over.
    """
    known = {v.provider_volume_id for v in tracked}
    return [a for a in attached if a.id not in known]


def vanished(tracked: Iterable[TrackedVolume], attached: Sequence[AttachedVolume]) -> list[TrackedVolume]:
    """Live tracked volumes that were attached but the server no longer lists."""
    present = {a.id for a in attached}
    return [v for v in tracked if v.live and v.recorded_attached and v.provider_volume_id not in present]


def delete_on_terminate_for(volume: AttachedVolume, instance_default: bool) -> bool:
    """Boot volumes always go with the instance; any other volume follows what the deployment asked."""
    return True if volume.is_root else instance_default


class VolumeAction(enum.Enum):
    DELETE = "delete"  # detached and should go: delete it
    FORGET = "forget"  # gone from the cloud: mark the row deleted
    MARK_DETACHED = "mark_detached"  # kept, now detached: record it
    WAIT = "wait"  # still attached, detaching or busy: look again later
    DONE = "done"  # kept and recorded, or nothing left to do


def release_action(volume: TrackedVolume, state: VolumeState | None, *, delete_all: bool) -> VolumeAction:
    """What to do with one tracked volume once its server is gone.

    `state` is the cloud's (None: it does not exist). `delete_all` is set for a failed instance: what
    provisioning created for it is of no use to anyone, persistent or not.
    """
    if volume.deleted_at is not None:
        return VolumeAction.DONE
    if state is None or state is VolumeState.DELETED:
        return VolumeAction.FORGET
    if state in (VolumeState.IN_USE, VolumeState.BUSY, VolumeState.CREATING, VolumeState.DELETING):
        return VolumeAction.WAIT
    if delete_all or volume.delete_on_terminate:
        # UNKNOWN is tried too: the delete call either works or says why (in use -> transient, retried).
        return VolumeAction.DELETE
    if volume.detached_at is None:
        return VolumeAction.MARK_DETACHED
    return VolumeAction.DONE
