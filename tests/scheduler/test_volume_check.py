"""The comparison of tracked volumes with the cloud, one table row per way they can disagree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from providers.base import GB, AttachedVolume, Volume, VolumeState
from scheduler.naming import data_volume_name
from scheduler.volume_check import (
    Expectation,
    Kind,
    TrackedRecord,
    allowed_delete_on_terminate,
    checked,
    compare,
)

INSTANCE = "11111111-1111-4111-8111-111111111111"
SERVER = "srv-1"
DATA = data_volume_name(INSTANCE)
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def row(volume_id: str, **kw: Any) -> TrackedRecord:
    """A tracked row: an attached 10 GB extra volume in slot 1 unless told otherwise."""
    fields: dict[str, Any] = dict(
        provider_volume_id=volume_id, is_boot=False, delete_on_terminate=True, name=volume_id, attached_at=T0,
        detached_at=None, deleted_at=None, volume_type="sbs_volume", size_bytes=10 * GB, slot="1",
    )  # fmt: skip
    fields.update(kw)
    return TrackedRecord(**fields)


def boot(**kw: Any) -> TrackedRecord:
    return row("boot", **{"is_boot": True, "slot": "0", "name": "image_sbs_volume_0", **kw})


def data(**kw: Any) -> TrackedRecord:
    # Tracked from the created volume: the volume API's type, no slot.
    return row("data", **{"name": DATA, "slot": None, "volume_type": "sbs_5k", "size_bytes": 200 * GB, **kw})


def listed(volume_id: str, slot: str = "1", volume_type: str = "sbs_volume", size: int | None = None) -> AttachedVolume:
    return AttachedVolume(volume_id, slot, volume_type, size)


def cloud(volume_id: str, size: int = 10 * GB, volume_type: str = "sbs_5k", state: VolumeState = VolumeState.IN_USE,
          server: str | None = SERVER, tags: tuple[str, ...] = ()) -> Volume:  # fmt: skip
    return Volume(volume_id, volume_id, "zone-1", volume_type, size, state, tags, server)


def expect(status: str = "ready", server: str | None = SERVER, delete_on_terminate: bool = True) -> Expectation:
    return Expectation.from_row({"id": INSTANCE, "status": status, "provider_instance_id": server,
                                 "data_volume_delete_on_terminate": delete_on_terminate})  # fmt: skip


CLEAN_TRACKED = [boot(size_bytes=20 * GB), data()]
CLEAN_LISTED = [listed("boot", "0"), listed("data", "1")]
CLEAN_CLOUD = {"boot": cloud("boot", 20 * GB), "data": cloud("data", 200 * GB)}

Case = tuple[str, Expectation, list[TrackedRecord], list[AttachedVolume] | None, dict[str, Volume | None], list[Kind]]
# fmt: off
CASES: list[Case] = [
    ("clean, the boot volume's two type names and all", expect(), CLEAN_TRACKED, CLEAN_LISTED, CLEAN_CLOUD, []),
    ("clean, judged on the listing alone", expect(), CLEAN_TRACKED, CLEAN_LISTED, {}, []),
    ("a ready instance's server is gone", expect(), CLEAN_TRACKED, None, {}, [Kind.SERVER_MISSING]),
    ("a booting one's too", expect("booting"), CLEAN_TRACKED, None, {}, [Kind.SERVER_MISSING]),
    ("a failed one's is being released", expect("failed"), CLEAN_TRACKED, None, {}, []),
    ("no server yet: nothing about attachment", expect("provisioning", None), [data(attached_at=None)], None,
     {"data": cloud("data", 200 * GB, state=VolumeState.AVAILABLE, server=None)}, []),
    ("tracked, gone from the cloud", expect(), [data()], [], {"data": None}, [Kind.VOLUME_MISSING]),
    ("gone and listed: the listing wins", expect(), [data()], [listed("data")], {"data": None}, []),
    ("not listed, not looked up", expect(), [data()], [], {}, [Kind.DETACHED]),
    ("detached behind our back", expect(), [data()], [], {"data": cloud("data", 200 * GB, server=None)},
     [Kind.DETACHED]),
    ("attached to another server", expect(), [data()], [], {"data": cloud("data", 200 * GB, server="srv-2")},
     [Kind.WRONG_SERVER]),
    ("still on its way off the server", expect(), [data()], [],
     {"data": cloud("data", 200 * GB, state=VolumeState.BUSY)}, [Kind.DETACHED]),
    ("recorded detached, attached", expect(), [data(detached_at=T0)], [listed("data")], {},
     [Kind.UNEXPECTED_ATTACHMENT]),
    ("never recorded attached, attached", expect(), [data(attached_at=None)], [listed("data")], {},
     [Kind.UNEXPECTED_ATTACHMENT]),
    ("recorded detached, detached", expect(), [data(detached_at=T0)], [],
     {"data": cloud("data", 200 * GB, server=None)}, []),
    ("resized", expect(), [data()], [listed("data")], {"data": cloud("data", 300 * GB)}, [Kind.SIZE]),
    ("resized, seen in the listing", expect(), [data()], [listed("data", size=300 * GB)], {}, [Kind.SIZE]),
    ("size never recorded", expect(), [data(size_bytes=None)], [listed("data")], {"data": cloud("data")}, []),
    ("a listed row's type, from the listing", expect(), [row("x")], [listed("x", volume_type="l_ssd")], {},
     [Kind.TYPE]),
    ("a created row's type, from the volume API", expect(), [data()], [listed("data")],
     {"data": cloud("data", 200 * GB, volume_type="sbs_15k")}, [Kind.TYPE]),
    ("in error", expect(), [data()], [listed("data")], {"data": cloud("data", 200 * GB, state=VolumeState.ERROR)},
     [Kind.STATE]),
    ("busy is fine", expect(), [data()], [listed("data")], {"data": cloud("data", 200 * GB, state=VolumeState.BUSY)},
     []),
    ("boot row out of slot 0", expect(), [boot()], [listed("boot", "1")], {}, [Kind.BOOT_FLAG]),
    ("slot 0 not the boot row", expect(), [row("x", slot="0")], [listed("x", "0")], {}, [Kind.BOOT_FLAG]),
    ("a boot volume kept", expect(), [boot(delete_on_terminate=False)], [listed("boot", "0")], {},
     [Kind.DELETE_ON_TERMINATE]),
    ("a data volume going though kept was asked", expect(delete_on_terminate=False), [data()], [listed("data")], {},
     [Kind.DELETE_ON_TERMINATE]),
    ("a data volume kept though not asked", expect(), [data(delete_on_terminate=False)], [listed("data")], {},
     [Kind.DELETE_ON_TERMINATE]),
    ("an extra volume going with its server", expect(delete_on_terminate=False), [row("x")], [listed("x")], {}, []),
    ("an extra volume kept though not asked", expect(), [row("x", delete_on_terminate=False)], [listed("x")], {},
     [Kind.DELETE_ON_TERMINATE]),
    ("attached, no row", expect(), [], [listed("x")], {}, [Kind.UNTRACKED]),
    ("attached, its row marked deleted", expect(), [data(deleted_at=T0)], [listed("data")], {}, []),
    ("a deleted row is not judged", expect(), [data(deleted_at=T0)], [], {"data": None}, []),
    ("several at once", expect(), [data(size_bytes=1 * GB, delete_on_terminate=False)],
     [listed("data"), listed("y", "2")], {"data": cloud("data", 200 * GB)},
     [Kind.SIZE, Kind.DELETE_ON_TERMINATE, Kind.UNTRACKED]),
]
# fmt: on


@pytest.mark.parametrize(("name", "expectation", "tracked", "attached", "cloud_volumes", "kinds"), CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_compare(
    name: str, expectation: Expectation, tracked: list[TrackedRecord], attached: list[AttachedVolume] | None,
    cloud_volumes: dict[str, Volume | None], kinds: list[Kind],
) -> None:  # fmt: skip
    findings = compare(expectation, tracked, attached, cloud_volumes)
    assert [f.kind for f in findings] == kinds
    assert all(f.instance_id == INSTANCE for f in findings)


def test_a_finding_says_what_where_expected_and_actual() -> None:
    [finding] = compare(expect(), [data()], [listed("data")], {"data": cloud("data", 300 * GB)})
    assert finding.as_dict() == {
        "kind": "size", "instance_id": INSTANCE, "volume_id": "data", "what": "data size", "expected": "200 GB",
        "actual": "300 GB", "verdict": "MISMATCH",
    }  # fmt: skip
    [moved] = compare(expect(), [boot()], [], {"boot": cloud("boot", server="srv-2")})
    assert (moved.what, moved.expected, moved.actual) == (
        "boot attachment", "attached to server srv-1", "attached to server srv-2"
    )


@pytest.mark.parametrize(
    ("tracked", "asked", "allowed"),
    [(boot(), False, {True}), (data(), False, {False}), (data(), True, {True}), (row("x"), False, {True, False}),
     (row("x"), True, {True})],
)  # fmt: skip
def test_allowed_delete_on_terminate(tracked: TrackedRecord, asked: bool, allowed: set[bool]) -> None:
    assert allowed_delete_on_terminate(tracked, expect(delete_on_terminate=asked)) == allowed


def test_checked_lists_the_server_and_each_live_volume_without_a_finding() -> None:
    tracked = [boot(size_bytes=20 * GB), data(), row("gone", deleted_at=T0)]
    findings = compare(expect(), tracked, [listed("boot", "0"), listed("data")], {"data": cloud("data", 300 * GB)})
    rows = checked(expect(), tracked, [listed("boot", "0"), listed("data")], findings)
    assert [(c.subject_id, c.what, c.description) for c in rows] == [
        (SERVER, "server", "exists, 2 volume(s)"),
        ("boot", "boot", "20 GB sbs_volume, attached to srv-1"),
    ]
