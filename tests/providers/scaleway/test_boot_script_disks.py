"""The worker boot script's data-volume logic, run for real on loop devices (see tests/support/boot_script.py).

Each test attaches small sparse images as loop devices, links them the way Scaleway's udev rules name SBS
volumes, and runs the unmodified script from the generated #cloud-config in a private mount namespace.
Needs root, loop devices and util-linux/e2fsprogs/fdisk; without them the tests skip, or fail with
INVENTIV_REQUIRE_SYSTEM_TOOLS=1. Each test calls require() itself: pytest.fail in a fixture would report
an error, not a failure.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boot_script
import pytest
from boot_script import LINK_PREFIX, BootResult, BootRig, Disk, blank, ext4, ext4_with_stray_iso9660, partition_table

from providers.scaleway.cloud_init import DATA_DIR, SCRIPT_PATH, WorkerBoot, worker_cloud_config
from worker.engines import ENGINES, EngineName

MODEL = "Qwen/Qwen2.5-7B-Instruct"
IMAGE = "registry.example.com/team/vllm:1"


def user_data(data_device_hint: str) -> str:
    """The one place that knows worker_cloud_config's parameters: update it when they change."""
    boot = WorkerBoot(MODEL, ENGINES[EngineName.VLLM], IMAGE, 8001, "worker-secret-0123456789", data_device_hint)
    return worker_cloud_config(boot)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[BootRig]:
    with BootRig(tmp_path, script_path=SCRIPT_PATH, data_dir=DATA_DIR) as rig:
        yield rig


def boot(rig: BootRig, *, runs: int = 1, before: str = "") -> BootResult:
    result = rig.run(user_data(rig.hint), runs=runs, before=before)
    assert result.refused == [], f"the script reached for a host device:\n{result.log}"
    return result


def assert_worker_started(result: BootResult) -> None:
    assert result.returncodes and set(result.returncodes) == {0}, result.log
    [run] = result.docker_runs()
    assert IMAGE in run and any(DATA_DIR in arg for arg in run), run


def assert_cache_on_root(rig: BootRig, result: BootResult) -> None:
    """No data volume: nothing mounted, fstab as it was, the cache folder on the root disk."""
    assert result.mount is None
    assert result.fstab_entries() == []
    assert (rig.root_data_dir / "huggingface").is_dir()


def assert_volume_in_use(rig: BootRig, result: BootResult, disk: Disk) -> None:
    """`disk` is mounted at the data directory, recorded once in fstab by UUID, and holds the cache."""
    uuid = disk.signature()["UUID"]
    assert result.mount is not None, result.log
    assert (result.mount["source"], result.mount["fstype"]) == (disk.device, "ext4")
    assert result.fstab_entries() == [[f"UUID={uuid}", DATA_DIR, "ext4", "defaults,nofail", "0", "2"]]
    assert "huggingface" in disk.listing("/")
    assert not (rig.root_data_dir / "huggingface").exists()


def test_the_script_is_valid_bash(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text(boot_script.extract_script(user_data("/dev/disk/by-id/x-*"), SCRIPT_PATH))
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 0, done.stderr


def test_a_blank_disk_is_formatted_mounted_and_recorded_by_uuid(rig: BootRig) -> None:
    boot_script.require()
    disk = rig.disk(blank)
    result = boot(rig)
    assert_worker_started(result)
    assert result.formatted == [disk.device]
    assert disk.signature()["TYPE"] == "ext4"
    assert disk.signature()["LABEL"] == "inventiv-data"
    assert_volume_in_use(rig, result, disk)


def test_a_formatted_disk_is_kept_with_its_files(rig: BootRig) -> None:
    boot_script.require()
    disk = rig.disk(ext4({"precious.txt": "weights"}))
    uuid = disk.signature()["UUID"]
    result = boot(rig)
    assert_worker_started(result)
    assert result.formatted == []
    assert disk.signature()["UUID"] == uuid
    assert disk.read("/precious.txt") == "weights"
    assert "precious.txt" in result.data_dir_entries  # seen through the mount, inside the namespace
    assert_volume_in_use(rig, result, disk)


@pytest.mark.parametrize(
    ("label", "files", "partition_links"),
    [
        # udev links partitions too (`<volume>-part1`); a blank partition's blkid probe still reports its
        # partition entry (PART_ENTRY_*), which is what keeps it from being formatted.
        pytest.param("dos", None, True, id="dos"),
        pytest.param("gpt", None, True, id="gpt"),
        pytest.param("gpt", {"theirs.txt": "data"}, False, id="gpt-ext4-partition-unlinked"),
        pytest.param("gpt", {"theirs.txt": "data"}, True, id="gpt-ext4-partition"),
    ],
)
def test_a_partitioned_disk_is_never_touched(
    rig: BootRig, label: str, files: dict[str, str] | None, partition_links: bool
) -> None:
    boot_script.require()
    disk = rig.disk(partition_table(label, files), partition_links=partition_links)
    assert len(disk.partitions) == 1
    digest = disk.digest()
    result = boot(rig)
    assert result.formatted == []
    assert disk.digest() == digest
    assert disk.signature().get("PTTYPE") == label
    assert_worker_started(result)
    assert_cache_on_root(rig, result)


def test_a_disk_mounted_elsewhere_is_skipped(rig: BootRig) -> None:
    boot_script.require()
    disk = rig.disk(ext4({"theirs.txt": "in use"}))
    uuid = disk.signature()["UUID"]
    elsewhere = rig.root / "elsewhere"
    where = shlex.quote(str(elsewhere))
    result = boot(rig, before=f"mkdir -p {where} && mount {disk.device} {where}")
    assert_worker_started(result)
    assert result.formatted == []
    assert disk.signature()["UUID"] == uuid
    assert_cache_on_root(rig, result)


def test_the_root_disk_is_skipped(rig: BootRig) -> None:
    boot_script.require()
    root = _root_disk()
    if root is None:
        pytest.skip("the root filesystem is not on a block device here (overlay?)")
    # The guards refuse any format or mount of a non-rig device, so a wrong answer cannot hurt the host.
    rig.link(root, f"{LINK_PREFIX}root-volume")
    result = boot(rig)
    assert_worker_started(result)
    assert result.formatted == []
    assert_cache_on_root(rig, result)


def test_without_a_matching_device_the_worker_still_starts(rig: BootRig) -> None:
    boot_script.require()
    # A local-SSD style link the SBS hint does not match: present, but not a candidate.
    other = rig.disk(blank, link="scsi-0SCW_b_ssd_volume-")
    result = boot(rig)
    assert_worker_started(result)
    assert result.formatted == []
    assert other.signature() == {}
    assert_cache_on_root(rig, result)


def test_the_link_of_the_right_volume_is_followed(rig: BootRig) -> None:
    boot_script.require()
    # Attached first, so it gets the lower loop number: unlinked, it must still be passed over.
    unlinked = rig.disk(blank, link=None)
    volume_id = "0b1c2d3e-4f50-4617-8283-94a5b6c7d8e9"
    disk = rig.disk(blank, volume_id=volume_id)
    assert disk.link is not None and disk.link.name == f"{LINK_PREFIX}{volume_id}"
    result = boot(rig)
    assert_worker_started(result)
    assert result.formatted == [disk.device]
    assert unlinked.signature() == {}
    assert_volume_in_use(rig, result, disk)


@pytest.mark.parametrize(
    ("runs", "second_boot"),
    [
        pytest.param(2, None, id="twice-in-one-boot"),
        pytest.param(1, "mount -a", id="reboot-fstab-mounted"),
        pytest.param(1, "", id="reboot-not-mounted"),
    ],
)
def test_running_again_neither_reformats_nor_duplicates_fstab(rig: BootRig, runs: int, second_boot: str | None) -> None:
    boot_script.require()
    disk = rig.disk(blank)
    result = boot(rig, runs=runs)
    uuid = disk.signature()["UUID"]
    if second_boot is not None:
        # A new namespace is a fresh mount table: what a reboot leaves. `mount -a` is systemd's fstab pass.
        result = boot(rig, before=second_boot)
    assert set(result.returncodes) == {0}, result.log
    assert result.formatted == [disk.device]  # the guard's log spans every run of this rig: one format
    assert disk.signature()["UUID"] == uuid
    assert len(result.docker_runs()) == 1  # the second run finds the container docker restarts itself
    assert_volume_in_use(rig, result, disk)


def test_a_disk_holding_swap_is_left_alone_and_the_worker_starts(rig: BootRig) -> None:
    boot_script.require()
    disk = rig.disk(boot_script.swap)
    digest = disk.digest()
    result = boot(rig)
    assert disk.digest() == digest
    assert_worker_started(result)
    assert_cache_on_root(rig, result)


def test_a_disk_with_ambivalent_signatures_is_never_formatted(rig: BootRig) -> None:
    boot_script.require()
    disk = rig.disk(ext4_with_stray_iso9660({"precious.txt": "weights"}))
    digest = disk.digest()
    result = boot(rig)
    assert result.formatted == []
    assert disk.digest() == digest
    assert disk.read("/precious.txt") == "weights"
    assert_worker_started(result)


def _root_disk() -> str | None:
    """The whole disk under / (e.g. /dev/vda for /dev/vda1), None when / is no block device."""
    source = subprocess.run(
        ["findmnt", "-no", "SOURCE", "/"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.strip()
    if not source.startswith("/dev/"):
        return None
    parent = subprocess.run(
        ["lsblk", "-no", "PKNAME", source], capture_output=True, text=True, timeout=10, check=False
    ).stdout.split()
    return f"/dev/{parent[0]}" if parent else source
