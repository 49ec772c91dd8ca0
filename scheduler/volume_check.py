"""Tracked volumes against the cloud: every way they can disagree, decided without I/O.

`compare` judges one instance from its instance_volumes rows, what its server lists (None: it has no
server, or the server is gone) and the volumes the caller looked up in the cloud. A volume it did not
look up is judged on the server's listing alone, so each caller pays for the lookups it needs:
`inventiv volumes verify` looks every tracked volume up and reports everything; reconciliation
(scheduler/reconcile.py) looks up only the volumes the server stopped listing and repairs what it can.

"Expected" is what should be (the tracked row, or the rule a row must follow), "actual" what is. Tagged
volumes of no live instance are the orphan sweep's to judge (`scheduler.sweep.find_orphans`); verify
reports them as ORPHAN findings.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inventiv.statuses import InstanceStatus
from providers.base import GB, AttachedVolume, Volume, VolumeState
from scheduler.naming import data_volume_name
from scheduler.volumes import TrackedVolume, untracked

# Statuses in which the instance's recorded server must exist (reconciliation fails the instance when it
# is gone, but for a provisioning one, which notices it itself). Terminating and failed instances are
# being released: their server going is the release's progress, not a mismatch.
SERVER_STATUSES = (InstanceStatus.PROVISIONING, InstanceStatus.BOOTING, InstanceStatus.READY)
# Cloud states of a volume nobody can use: broken, unknown to us, or on its way out.
_BAD_STATES = frozenset({VolumeState.ERROR, VolumeState.UNKNOWN, VolumeState.DELETING, VolumeState.DELETED})


class Kind(enum.StrEnum):
    SERVER_MISSING = "server_missing"  # the recorded server is gone while the status needs it
    VOLUME_MISSING = "volume_missing"  # tracked, and the cloud has no such volume
    DETACHED = "detached"  # recorded attached to the server; the cloud has it detached
    WRONG_SERVER = "wrong_server"  # recorded attached to the server; the cloud has it on another one
    UNEXPECTED_ATTACHMENT = "unexpected_attachment"  # recorded detached; the server lists it
    SIZE = "size"
    TYPE = "type"
    STATE = "state"  # the cloud reports it broken or going (error, deleting, deleted, unknown)
    BOOT_FLAG = "boot_flag"  # is_boot disagrees with the server's slot "0"
    DELETE_ON_TERMINATE = "delete_on_terminate"  # not what the instance asked (boot volumes always go)
    UNTRACKED = "untracked"  # attached to the instance's server, with no row
    ORPHAN = "orphan"  # carries the deployment tag, and no live instance owns it
    UNCHECKED = "unchecked"  # the cloud could not be asked (set by the caller, never by `compare`)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    instance_id: str | None
    volume_id: str | None  # the volume, or the server for SERVER_MISSING
    what: str
    expected: str
    actual: str

    @property
    def verdict(self) -> str:
        return "UNCHECKED" if self.kind is Kind.UNCHECKED else "MISMATCH"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value, "instance_id": self.instance_id, "volume_id": self.volume_id,
            "what": self.what, "expected": self.expected, "actual": self.actual, "verdict": self.verdict,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Checked:
    """Something compared and found as expected: a row of the report that says so."""

    instance_id: str
    subject_id: str
    what: str
    description: str


@dataclass(frozen=True, slots=True)
class TrackedRecord(TrackedVolume):
    """An instance_volumes row with what is compared beyond the decisions' needs."""

    volume_type: str | None = None
    size_bytes: int | None = None
    # Set when the row was tracked from a server's listing (track_volume), which says which type names it.
    slot: str | None = None


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the instance row says its volumes should look like."""

    instance_id: str
    server_id: str | None
    # The status needs the recorded server (if there is one) to exist: see SERVER_STATUSES.
    server_required: bool
    data_delete_on_terminate: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Expectation:
        """From an instance row with id, status, provider_instance_id, data_volume_delete_on_terminate."""
        server_id = row["provider_instance_id"]
        return cls(
            instance_id=str(row["id"]),
            server_id=server_id,
            server_required=row["status"] in SERVER_STATUSES,
            data_delete_on_terminate=row["data_volume_delete_on_terminate"],
        )


def compare(
    expect: Expectation,
    tracked: Sequence[TrackedRecord],
    attached: Sequence[AttachedVolume] | None,
    cloud_volumes: Mapping[str, Volume | None],
) -> list[Finding]:
    """Every mismatch of one instance. `attached`: what its server lists, None when it has no server (none
    recorded, or gone); `cloud_volumes`: volume id -> what the cloud says (None: no such volume) for the
    volumes looked up."""
    findings: list[Finding] = []
    if attached is None and expect.server_id is not None and expect.server_required:
        findings.append(_finding(Kind.SERVER_MISSING, expect, expect.server_id, "server", "exists", "not found"))
    listed = {a.id: a for a in attached or ()}
    for row in tracked:
        if row.live:
            judge = _Judge(expect, row, listed.get(row.provider_volume_id), attached is not None)
            findings += judge.run(cloud_volumes)
    for volume in untracked(tracked, attached or ()):
        where = f"attached to server {expect.server_id} in slot {volume.slot}"
        findings.append(_finding(Kind.UNTRACKED, expect, volume.id, "tracking", "tracked", f"{where}, no row"))
    return findings


@dataclass(frozen=True, slots=True)
class _Judge:
    """One tracked volume against the server's listing of it (None: not listed) and the cloud's record."""

    expect: Expectation
    row: TrackedRecord
    listing: AttachedVolume | None
    has_server: bool

    def run(self, cloud_volumes: Mapping[str, Volume | None]) -> list[Finding]:
        looked_up = self.row.provider_volume_id in cloud_volumes
        cloud = cloud_volumes.get(self.row.provider_volume_id)
        if looked_up and cloud is None and self.listing is None:
            return [self._finding(Kind.VOLUME_MISSING, "volume", "exists", "not found")]
        findings = self._attachment(cloud) if self.has_server else []
        findings += self._size(cloud) + self._type(cloud) + self._flags()
        if cloud is not None and cloud.state in _BAD_STATES:
            findings.append(self._finding(Kind.STATE, "state", "usable", cloud.state.value))
        return findings

    def _finding(self, kind: Kind, aspect: str, expected: str, actual: str) -> Finding:
        what = f"{role(self.row, self.expect.instance_id)} {aspect}"
        return _finding(kind, self.expect, self.row.provider_volume_id, what, expected, actual)

    def _attachment(self, cloud: Volume | None) -> list[Finding]:
        here = f"attached to server {self.expect.server_id}"
        if self.row.recorded_attached and self.listing is None:
            holder = cloud.server_id if cloud is not None else None
            if holder is not None and holder != self.expect.server_id:
                return [self._finding(Kind.WRONG_SERVER, "attachment", here, f"attached to server {holder}")]
            if cloud is None:
                actual = "not listed by the server"
            else:  # detached, or on its way to or from the server (attaching, detaching)
                actual = "detached" if holder is None else f"not listed by the server ({cloud.state.value})"
            return [self._finding(Kind.DETACHED, "attachment", here, actual)]
        if not self.row.recorded_attached and self.listing is not None:
            actual = f"{here} in slot {self.listing.slot}"
            return [self._finding(Kind.UNEXPECTED_ATTACHMENT, "attachment", "detached", actual)]
        return []

    def _size(self, cloud: Volume | None) -> list[Finding]:
        actual = cloud.size_bytes if cloud is not None else None
        if actual is None and self.listing is not None:
            actual = self.listing.size_bytes
        if self.row.size_bytes is None or actual is None or actual == self.row.size_bytes:
            return []
        return [self._finding(Kind.SIZE, "size", gigabytes(self.row.size_bytes), gigabytes(actual))]

    def _type(self, cloud: Volume | None) -> list[Finding]:
        # A server's listing and the volume API may name one volume's type differently (Scaleway: sbs_volume
        # vs sbs_5k): a row is compared with the source it was tracked from, a slot saying it was a listing.
        source = self.listing if self.row.slot is not None else cloud
        if source is None or self.row.volume_type is None or source.volume_type == self.row.volume_type:
            return []
        return [self._finding(Kind.TYPE, "type", self.row.volume_type, source.volume_type)]

    def _flags(self) -> list[Finding]:
        findings = []
        if self.listing is not None and self.row.is_boot != self.listing.is_root:
            expected = "boot volume (slot 0)" if self.row.is_boot else "not the boot volume"
            findings.append(self._finding(Kind.BOOT_FLAG, "boot flag", expected, f"slot {self.listing.slot}"))
        allowed = allowed_delete_on_terminate(self.row, self.expect)
        if self.row.delete_on_terminate not in allowed:
            expected = " or ".join(_flag(v) for v in sorted(allowed, reverse=True))
            actual = _flag(self.row.delete_on_terminate)
            findings.append(self._finding(Kind.DELETE_ON_TERMINATE, "delete_on_terminate", expected, actual))
        return findings


def allowed_delete_on_terminate(row: TrackedVolume, expect: Expectation) -> frozenset[bool]:
    """The values a row may hold: the boot volume always goes with the instance, its data volume does as the
    instance asked; any other volume (local disks that came with the server, found attached later) may go
    either way with the server (provisioning tracks what came with it as going), or as the instance asked."""
    if row.is_boot:
        return frozenset({True})
    if row.name == data_volume_name(expect.instance_id):
        return frozenset({expect.data_delete_on_terminate})
    return frozenset({True, expect.data_delete_on_terminate})


def checked(
    expect: Expectation,
    tracked: Sequence[TrackedRecord],
    attached: Sequence[AttachedVolume] | None,
    findings: Sequence[Finding],
) -> list[Checked]:
    """What was compared and found as expected: the live server, and each live volume with no finding."""
    faulty = {f.volume_id for f in findings if f.instance_id == expect.instance_id}
    out = []
    if attached is not None and expect.server_id is not None:
        out.append(Checked(expect.instance_id, expect.server_id, "server", f"exists, {len(attached)} volume(s)"))
    for row in tracked:
        if row.live and row.provider_volume_id not in faulty:
            what = role(row, expect.instance_id)
            out.append(Checked(expect.instance_id, row.provider_volume_id, what, describe(row, expect.server_id)))
    return out


def role(row: TrackedVolume, instance_id: str) -> str:
    if row.is_boot:
        return "boot"
    return "data" if row.name == data_volume_name(instance_id) else "extra"


def describe(row: TrackedRecord, server_id: str | None) -> str:
    size = gigabytes(row.size_bytes) if row.size_bytes is not None else "size unknown"
    kind = f"{size} {row.volume_type}" if row.volume_type else size
    return f"{kind}, attached to {server_id}" if row.recorded_attached else f"{kind}, detached"


def gigabytes(size_bytes: int) -> str:
    return f"{size_bytes / GB:g} GB"


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _finding(kind: Kind, expect: Expectation, subject: str, what: str, expected: str, actual: str) -> Finding:
    return Finding(kind, expect.instance_id, subject, what, expected, actual)


def tracked_records(rows: Iterable[Mapping[str, Any]]) -> list[TrackedRecord]:
    return [TrackedRecord.from_row(row) for row in rows]
