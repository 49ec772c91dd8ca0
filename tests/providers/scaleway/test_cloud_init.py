"""The worker's #cloud-config: its YAML, its quoting, refused values, and the boot script run for real.

The boot script runs under bash with the system tools it calls (findmnt, lsblk, blkid, mkfs.ext4, mount,
docker, nvidia-smi, ...) replaced by one stub that answers from a described machine and records each
call. Only the two host paths it writes (fstab and the data directory) are moved into a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from providers.scaleway.cloud_init import DATA_DIR, SCRIPT_PATH, CloudInitError, worker_cloud_config

MODEL = "Qwen/Qwen2.5-7B-Instruct"
IMAGE = "vllm/vllm-openai:v0.6.3"
SBS = "/dev/disk/by-id/scsi-0SCW_sbs_volume-*"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the boot script is bash")


def boot_script(document: str) -> str:
    parsed = yaml.safe_load(document)
    [entry] = parsed["write_files"]
    assert (entry["path"], entry["permissions"]) == (SCRIPT_PATH, "0755")
    assert parsed["runcmd"] == [[SCRIPT_PATH]]
    script: str = entry["content"]
    return script


def shell_values(script: str) -> dict[str, str]:
    """What bash assigns to the script's variables (its header only, nothing is run)."""
    header = script.split("\nlog() ", 1)[0]
    names = ("MODEL", "IMAGE", "HOST_PORT", "DATA_DEVICES", "DATA_DIR")
    printed = "".join(f'printf "%s\\0" "${name}"\n' for name in names)
    out = subprocess.run(["bash", "-c", f"{header}\n{printed}"], capture_output=True, check=True, timeout=10).stdout
    return dict(zip(names, out.decode().split("\0")[:-1], strict=True))


@pytest.mark.parametrize(
    ("model", "port", "image", "hint"),
    [
        (MODEL, 8000, IMAGE, SBS),
        (MODEL, 8000, IMAGE, None),
        ("gpt2", 9001, "registry.example.com:5000/team/vllm@sha256:" + "a" * 64, "/dev/sdb"),
        ("meta-llama/Llama-3.1-8B-Instruct", 1, "vllm/vllm-openai:latest", "/dev/disk/by-id/nvme-*_vol?"),
    ],
)
def test_the_document_parses_and_bash_reads_back_every_value(
    model: str, port: int, image: str, hint: str | None
) -> None:
    document = worker_cloud_config(model, port=port, image=image, data_device_hint=hint)

    assert document.startswith("#cloud-config\n")
    script = boot_script(document)
    assert script.startswith("#!/bin/bash\nset -euo pipefail\n")
    subprocess.run(["bash", "-n"], input=script.encode(), check=True, timeout=10)
    assert shell_values(script) == {
        "MODEL": model, "IMAGE": image, "HOST_PORT": str(port), "DATA_DEVICES": hint or "", "DATA_DIR": DATA_DIR,
    }  # fmt: skip


def test_a_glob_hint_is_quoted_so_it_is_expanded_only_where_the_script_means_to() -> None:
    script = boot_script(worker_cloud_config(MODEL, port=8000, image=IMAGE, data_device_hint=SBS))
    assert f"DATA_DEVICES='{SBS}'\n" in script


def test_no_secret_goes_into_the_document() -> None:
    document = worker_cloud_config(MODEL, port=8000, image=IMAGE, data_device_hint=None)
    assert "token" not in document.lower() and "secret" not in document.lower()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": "Qwen/Qwen2.5; reboot"}, "model id"),
        ({"model": "Qwen/$(reboot)"}, "model id"),
        ({"model": "Qwen/Qwen 2.5"}, "model id"),
        ({"model": "Qwen/Qwen'2.5"}, "model id"),
        ({"model": "Qwen/Qwen2.5\nruncmd: [reboot]"}, "model id"),
        ({"model": "Qwén/Qwen2.5"}, "model id"),
        ({"model": ""}, "model id"),
        ({"model": "../../etc/passwd"}, "not a Hugging Face repo id"),
        ({"model": "/models/qwen"}, "not a Hugging Face repo id"),
        ({"model": "org/name/extra"}, "not a Hugging Face repo id"),
        ({"model": "org//name"}, "not a Hugging Face repo id"),
        ({"model": "-rf/x"}, "not a Hugging Face repo id"),
        ({"image": "vllm/vllm-openai:latest --privileged"}, "worker image"),
        ({"image": "vllm/vllm-openai:$(id)"}, "worker image"),
        ({"port": 0}, "1-65535"),
        ({"port": 65536}, "1-65535"),
        ({"data_device_hint": "dev/sdb"}, "data device hint"),
        ({"data_device_hint": "/dev/sd[bc]"}, "data device hint"),
        ({"data_device_hint": "/dev/sdb /dev/sdc"}, "data device hint"),
    ],
)
def test_bad_values_are_refused(changes: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"model": MODEL, "port": 8000, "image": IMAGE, "data_device_hint": None, **changes}
    with pytest.raises(CloudInitError, match=message):
        worker_cloud_config(args.pop("model"), **args)


# -- the boot script on a described machine ----------------------------------------------------------

STUB = """\
import json, os, sys
name, args = sys.argv[1], sys.argv[2:]
machine = json.load(open(os.environ["MACHINE"]))
with open(os.environ["CALLS"], "a") as calls:
    calls.write(json.dumps([name, *args]) + "\\n")
disks = machine["disks"]
disk = disks.get(os.path.basename(args[-1]), {}) if args else {}

if name == "findmnt":
    print(machine["root_source"])
elif name == "lsblk" and args[:2] == ["-no", "PKNAME"]:
    print(disk.get("parent", ""))
elif name == "lsblk" and args[:2] == ["-dpno", "NAME,TYPE"]:
    for n, d in disks.items():
        if not d.get("parent"):
            print(f"/dev/{n} {d.get('type', 'disk')}")
elif name == "lsblk" and args[:2] == ["-no", "MOUNTPOINT"]:
    base = os.path.basename(args[2])
    for n, d in disks.items():
        if (n == base or d.get("parent") == base) and d.get("mount"):
            print(d["mount"])
elif name == "blkid" and "TYPE" in args:
    if not disk.get("fstype"):
        sys.exit(2)
    print(disk["fstype"])
elif name == "blkid" and "UUID" in args:
    print(disk.get("uuid", "0000-new"))
elif name == "blkid":
    sys.exit(0 if disk.get("fstype") or disk.get("signature") else 2)
elif name == "mountpoint":
    sys.exit(1)
elif name == "docker" and args[:2] == ["container", "inspect"]:
    sys.exit(0 if machine.get("container") else 1)
elif name == "nvidia-smi":
    for i in range(machine.get("gpus", 1)):
        print(f"GPU {i}: NVIDIA L40S (UUID: GPU-{i})")
"""
TOOLS = ("findmnt", "lsblk", "blkid", "mkfs.ext4", "mount", "mountpoint", "udevadm", "docker", "nvidia-smi")
FSTAB = "LABEL=cloudimg-rootfs / ext4 defaults 0 1\n"
# A root disk as Scaleway's images have it: one partition holding /.
ROOT = {"sda": {}, "sda1": {"parent": "sda", "mount": "/", "fstype": "ext4"}}


def run_boot(
    tmp_path: Path, disks: dict[str, Any], hint: str | None = None, **machine: Any
) -> tuple[list[list[str]], str, Path]:
    """Run the boot script on that machine: (the tool calls it made, the fstab it left, its data dir)."""
    bin_dir, dev, data, fstab = tmp_path / "bin", tmp_path / "dev", tmp_path / "data", tmp_path / "fstab"
    bin_dir.mkdir()
    dev.mkdir()
    for name in disks:
        (dev / name).touch()
    fstab.write_text(FSTAB)
    stub = bin_dir / "stub.py"
    stub.write_text(STUB)
    for tool in TOOLS:
        wrapper = bin_dir / tool
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{stub}" {tool} "$@"\n')
        wrapper.chmod(0o755)
    (tmp_path / "machine.json").write_text(json.dumps({"root_source": "/dev/sda1", **machine, "disks": disks}))
    script = boot_script(worker_cloud_config(MODEL, port=8001, image=IMAGE, data_device_hint=hint))
    script = script.replace(f"DATA_DIR={DATA_DIR}", f"DATA_DIR={data}").replace("/etc/fstab", str(fstab))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MACHINE": str(tmp_path / "machine.json"),
           "CALLS": str(tmp_path / "calls")}  # fmt: skip
    subprocess.run(["bash"], input=script.encode(), env=env, check=True, timeout=30, capture_output=True)
    calls = [json.loads(line) for line in (tmp_path / "calls").read_text().splitlines()]
    assert (data / "huggingface").is_dir(), "the model cache folder exists either way"
    return calls, fstab.read_text(), data


def formatted(calls: list[list[str]]) -> list[str]:
    return [Path(call[-1]).name for call in calls if call[0] == "mkfs.ext4"]


@pytest.mark.parametrize(
    ("disks", "mkfs", "fstab_entry"),
    [
        # A new data volume: formatted, then mounted by UUID.
        ({**ROOT, "sdb": {}}, ["sdb"], "UUID=0000-new {data} ext4 defaults,nofail 0 2"),
        # A persistent volume attached again: its filesystem and cache are kept.
        ({**ROOT, "sdb": {"fstype": "xfs", "uuid": "abcd"}}, [], "UUID=abcd {data} xfs defaults,nofail 0 2"),
        # A partitioned disk is someone's data: never wiped, never used.
        ({**ROOT, "sdb": {"signature": True}}, [], None),
        # A disk already mounted elsewhere is in use: the next one is taken.
        ({**ROOT, "sdb": {"fstype": "ext4", "mount": "/mnt/other"}, "sdc": {}}, ["sdc"],
         "UUID=0000-new {data} ext4 defaults,nofail 0 2"),
        # No data volume: the cache stays on the root disk.
        (ROOT, [], None),
        ({**ROOT, "sr0": {"type": "rom"}}, [], None),
    ],
)  # fmt: skip
def test_the_data_volume_is_found_formatted_only_when_blank_and_mounted_by_uuid(
    tmp_path: Path, disks: dict[str, Any], mkfs: list[str], fstab_entry: str | None
) -> None:
    calls, fstab, data = run_boot(tmp_path, disks)

    assert formatted(calls) == mkfs
    if fstab_entry is None:
        assert fstab == FSTAB
        assert not [c for c in calls if c[0] == "mount"]
    else:
        assert fstab == FSTAB + fstab_entry.format(data=data) + "\n"
        assert ["mount", str(data)] in calls


@pytest.mark.parametrize("listed_mount", ["/", None])
def test_the_root_disk_is_never_taken_even_where_lsblk_shows_no_mount_on_it(
    tmp_path: Path, listed_mount: str | None
) -> None:
    root = {"vda": {"mount": listed_mount, "fstype": "ext4"}, "vdb": {}}
    calls, _, _ = run_boot(tmp_path, root, root_source="/dev/vda")
    assert formatted(calls) == ["vdb"]


def test_with_a_hint_only_the_hinted_devices_are_candidates(tmp_path: Path) -> None:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    # sdb is a local scratch disk, blank and unmounted: without the hint it would be taken first.
    for link, target in (("root", "sda"), ("root-part1", "sda1"), ("data", "sdc")):
        (by_id / f"scsi-0SCW_sbs_volume-{link}").symlink_to(tmp_path / "dev" / target)
    hint = f"{by_id}/scsi-0SCW_sbs_volume-*"

    calls, _, _ = run_boot(tmp_path, {**ROOT, "sdb": {}, "sdc": {}}, hint)

    assert formatted(calls) == ["sdc"]
    assert not [c for c in calls if c[:2] == ["lsblk", "-dpno"]], "no scan of every disk"


def test_a_hint_that_matches_nothing_leaves_the_cache_on_the_root_disk(tmp_path: Path) -> None:
    calls, fstab, _ = run_boot(tmp_path, {**ROOT, "sdb": {}}, f"{tmp_path}/by-id/none-*")
    assert formatted(calls) == [] and fstab == FSTAB


def test_the_worker_container_serves_the_model_on_the_port_with_every_gpu(tmp_path: Path) -> None:
    calls, _, data = run_boot(tmp_path, ROOT, gpus=2)

    [run] = [c for c in calls if c[:2] == ["docker", "run"]]
    args = run[2:]
    assert args[args.index(IMAGE) :] == [
        IMAGE, "--model", MODEL, "--host", "0.0.0.0", "--port", "8000", "--tensor-parallel-size", "2",
    ]  # fmt: skip
    options = " ".join(args[: args.index(IMAGE)])
    for option in ("--gpus all", "--restart unless-stopped", "-p 8001:8000", f"-v {data}:{data}",
                   f"-e HF_HOME={data}/huggingface", "--name inventiv-worker"):  # fmt: skip
        assert option in options


def test_a_worker_container_that_exists_is_left_to_docker(tmp_path: Path) -> None:
    calls, _, _ = run_boot(tmp_path, ROOT, container=True)
    assert not [c for c in calls if c[:2] == ["docker", "run"]]
