"""What growing the root takes, by its kind and size."""

from __future__ import annotations

import pytest

from inventiv.deploy.errors import DeployError
from inventiv.deploy.root_volume import Resize, RootVolume, create_volumes, resize_for, root_entry

GB = 10**9


@pytest.mark.parametrize(
    ("kind", "size_gb", "wanted_gb", "expected"),
    [
        ("sbs_volume", 10, 40, Resize.BLOCK),
        ("sbs_volume", 40, 40, Resize.NONE),
        ("sbs_volume", 100, 40, Resize.NONE),  # never shrunk
        ("l_ssd", 20, 40, Resize.LOCAL),
        ("l_ssd", 40, 40, Resize.NONE),
        ("l_ssd", 80, 40, Resize.NONE),
    ],
)
def test_resize_for(kind: str, size_gb: int, wanted_gb: int, expected: Resize) -> None:
    assert resize_for(RootVolume("v", kind, size_gb * GB), wanted_gb * GB) is expected


def test_a_kind_that_cannot_grow_is_named() -> None:
    with pytest.raises(DeployError, match=r"root volume v is a 'scratch' volume, which cannot be grown"):
        resize_for(RootVolume("v", "scratch", GB), 40 * GB)


def test_the_root_is_slot_0_whatever_its_boot_flag() -> None:
    server = {"id": "s", "volumes": {"1": {"id": "data", "boot": True}, "0": {"id": "root", "boot": False}}}
    assert root_entry(server)["id"] == "root"
    with pytest.raises(DeployError, match=r"server s has no root volume"):
        root_entry({"id": "s", "volumes": {}})


def test_create_volumes() -> None:
    assert create_volumes("l_ssd", 40 * GB) == {"0": {"size": 40 * GB, "volume_type": "l_ssd"}}
