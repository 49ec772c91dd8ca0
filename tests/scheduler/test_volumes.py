from __future__ import annotations

from datetime import UTC, datetime

import pytest

from providers.base import AttachedVolume, VolumeState
from scheduler.volumes import (
    TrackedVolume,
    VolumeAction,
    data_volume_gb,
    delete_on_terminate_for,
    heuristic_data_volume_gb,
    release_action,
    untracked,
    vanished,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("forced", "requested", "model_gb", "provider_default", "params", "expected"),
    [
        (None, None, None, None, 7_610_000_000, 200),  # 7B -> 200 GB
        (None, None, None, None, 494_000_000, 100),
        (None, None, None, None, 14_700_000_000, 300),
        (None, None, None, None, 70_000_000_000, 1000),
        (None, None, None, None, 405_000_000_000, 2000),
        (None, None, None, None, None, 200),
        (None, None, None, 80, 7_610_000_000, 80),  # provider default beats the heuristic
        (None, None, 120, 80, 7_610_000_000, 120),  # the model's own size beats the provider's
        (None, 500, 120, 80, 7_610_000_000, 500),  # the deployment's ask beats the model's
        (None, 0, 120, 80, 7_610_000_000, 0),  # 0 means no data volume
        (50, 500, 120, 80, 7_610_000_000, 50),  # WORKER_DATA_VOLUME_GB forces all
        (0, 500, None, None, None, 0),
    ],
)
def test_data_volume_size_precedence(
    forced: int | None, requested: int | None, model_gb: int | None, provider_default: int | None,
    params: int | None, expected: int,
) -> None:  # fmt: skip
    got = data_volume_gb(
        forced=forced, requested=requested, model_gb=model_gb, provider_default=provider_default,
        parameter_count=params,
    )  # fmt: skip
    assert got == expected


def test_negative_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        data_volume_gb(forced=None, requested=-1, model_gb=None, provider_default=None, parameter_count=None)


def test_heuristic_grows_with_the_model() -> None:
    sizes = [heuristic_data_volume_gb(10**n) for n in range(8, 13)]
    assert sizes == sorted(sizes)


def vol(**kw: object) -> TrackedVolume:
    base: dict[str, object] = {"provider_volume_id": "v1", "is_boot": False, "delete_on_terminate": True}
    return TrackedVolume(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("volume", "state", "delete_all", "expected"),
    [
        (vol(), None, False, VolumeAction.FORGET),
        (vol(), VolumeState.DELETED, False, VolumeAction.FORGET),
        (vol(), VolumeState.AVAILABLE, False, VolumeAction.DELETE),
        (vol(), VolumeState.ERROR, False, VolumeAction.DELETE),
        (vol(), VolumeState.UNKNOWN, False, VolumeAction.DELETE),
        (vol(), VolumeState.IN_USE, False, VolumeAction.WAIT),
        (vol(), VolumeState.BUSY, False, VolumeAction.WAIT),
        (vol(), VolumeState.DELETING, False, VolumeAction.WAIT),
        (vol(delete_on_terminate=False), VolumeState.AVAILABLE, False, VolumeAction.MARK_DETACHED),
        (vol(delete_on_terminate=False, detached_at=NOW), VolumeState.AVAILABLE, False, VolumeAction.DONE),
        (vol(delete_on_terminate=False), VolumeState.IN_USE, False, VolumeAction.WAIT),
        (vol(delete_on_terminate=False), None, False, VolumeAction.FORGET),
        (vol(delete_on_terminate=False), VolumeState.AVAILABLE, True, VolumeAction.DELETE),  # failed: all go
        (vol(deleted_at=NOW), VolumeState.AVAILABLE, False, VolumeAction.DONE),
    ],
)
def test_release_action(volume: TrackedVolume, state: VolumeState | None, delete_all: bool,
                        expected: VolumeAction) -> None:  # fmt: skip
    assert release_action(volume, state, delete_all=delete_all) is expected


def test_untracked_counts_deleted_rows_as_known() -> None:
    tracked = [vol(provider_volume_id="a"), vol(provider_volume_id="b", deleted_at=NOW)]
    attached = [AttachedVolume("a", "0", "sbs"), AttachedVolume("b", "1", "sbs"), AttachedVolume("c", "2", "sbs")]
    assert [v.id for v in untracked(tracked, attached)] == ["c"]


def test_vanished_only_counts_attached_live_rows() -> None:
    tracked = [
        vol(provider_volume_id="still", attached_at=NOW),
        vol(provider_volume_id="gone", attached_at=NOW),
        vol(provider_volume_id="never-attached"),
        vol(provider_volume_id="detached", attached_at=NOW, detached_at=NOW),
        vol(provider_volume_id="deleted", attached_at=NOW, deleted_at=NOW),
    ]
    assert [v.provider_volume_id for v in vanished(tracked, [AttachedVolume("still", "0", "sbs")])] == ["gone"]


@pytest.mark.parametrize(
    ("slot", "instance_default", "expected"),
    [("0", False, True), ("0", True, True), ("1", False, False), ("1", True, True)],
)
def test_delete_on_terminate_for(slot: str, instance_default: bool, expected: bool) -> None:
    assert delete_on_terminate_for(AttachedVolume("v", slot, "sbs"), instance_default) is expected
