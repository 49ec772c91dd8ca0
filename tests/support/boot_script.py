"""Runs the worker boot script of a #cloud-config against real block devices (loop devices), as root.

The script is the one the document carries in write_files, unmodified. Around it:
- each disk is a sparse image attached with `losetup`, and its cloud-style link
  `<rig>/by-id/scsi-0SCW_sbs_volume-<volume id>` points at /dev/loopN (no udev here to make
  /dev/disk/by-id); the document's data device hint must be `rig.hint`;
- the script runs in a private mount namespace (`unshare --mount --propagation private`) in which
  /etc/fstab and the data directory's parent are bind mounts of the rig's own file and folder, so the
  host's fstab and mount table are never touched and every mount dies with the namespace;
- `docker`, `nvidia-smi` and `udevadm` are stubs first on PATH (udevadm: a real `settle` can wait two
  minutes for a queue no daemon drains); docker records its calls and knows the containers it "ran";
- guards first on PATH stand in front of the tools that format or mount (mkfs.ext4, mke2fs, mkfs,
  wipefs, sfdisk, mount): they pass a call through to the real tool only when every block device it
  names is one of the rig's loop devices, since a buggy script must never format or mount a host disk.

After the runs, checks in the same namespace record what is mounted at the data directory and what it
holds; blkid, debugfs and the image files tell the rest once the namespace is gone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from waiting import wait_until_sync

REQUIRE_ENV = "INVENTIV_REQUIRE_SYSTEM_TOOLS"
LINK_PREFIX = "scsi-0SCW_sbs_volume-"
# What cloud-init's runcmd gets on a Debian/Ubuntu host; also where the real tools are looked up.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Tool -> Debian package, for the skip message.
TOOLS = {
    "losetup": "mount",
    "mount": "mount",
    "unshare": "util-linux",
    "findmnt": "util-linux",
    "lsblk": "util-linux",
    "mountpoint": "util-linux",
    "blkid": "util-linux",
    "findfs": "util-linux",
    "partx": "util-linux",
    "mkswap": "util-linux",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "bash": "bash",
}
GUARDED = ("mkfs.ext4", "mke2fs", "mkfs", "wipefs", "sfdisk", "mount")
RUN_TIMEOUT_S = 30

Content = Callable[[Path], None]


# --- the script -------------------------------------------------------------------------------------


def extract_script(document: str, path: str) -> str:
    """The content of the write_files entry at `path`."""
    assert document.startswith("#cloud-config\n"), document[:40]
    for entry in yaml.safe_load(document).get("write_files", []):
        if entry.get("path") == path:
            content: str = entry["content"]
            return content
    raise AssertionError(f"no write_files entry at {path}")


# --- availability -----------------------------------------------------------------------------------


@functools.cache
def unavailable_reason() -> str | None:
    """Why the rig cannot run here (not root, missing tools, no loop devices), or None."""
    if os.geteuid() != 0:
        return "needs root: loop devices, mkfs and mount namespaces"
    missing = [tool for tool in TOOLS if _which(tool) is None]
    if missing:
        packages = " ".join(sorted({TOOLS[tool] for tool in missing}))
        return f"missing {', '.join(missing)}: apt-get install {packages}"
    with tempfile.TemporaryDirectory(prefix="inventiv-loop-probe-") as folder:
        image = Path(folder) / "probe.img"
        image.write_bytes(b"")
        os.truncate(image, 1 << 20)
        attach = _run(["losetup", "--find", "--show", str(image)])
        if attach.returncode != 0:
            return f"loop devices unavailable: {attach.stderr.strip()}"
        _run(["losetup", "--detach", attach.stdout.strip()])
    namespace = _run(["unshare", "--mount", "--propagation", "private", "true"])
    if namespace.returncode != 0:
        return f"mount namespaces unavailable: {namespace.stderr.strip()}"
    return None


def require() -> None:
    """Skips the calling test when the rig cannot run; fails it instead with INVENTIV_REQUIRE_SYSTEM_TOOLS=1."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


# --- disk contents, written to the image before it is attached ---------------------------------------


def blank(image: Path) -> None:
    """No signature at all: zeros."""


def ext4(files: dict[str, str] | None = None, *, block_size: int | None = None) -> Content:
    """An ext4 filesystem holding `files` (name -> text) at its top."""

    def make(image: Path) -> None:
        _mkfs_ext4(image, files or {}, *(["-b", str(block_size)] if block_size else []))

    return make


def partition_table(label: str, files: dict[str, str] | None = None) -> Content:
    """A `dos` or `gpt` partition table with one 8 MiB Linux partition: blank, or (with `files`) holding
    an ext4 filesystem with those files."""

    def make(image: Path) -> None:
        _check(["sfdisk", "--quiet", str(image)], stdin=f"label: {label}\n,8MiB,L\n")
        if files is None:
            return
        [partition] = json.loads(_check(["sfdisk", "--json", str(image)]))["partitiontable"]["partitions"]
        start, size = partition["start"] * 512, partition["size"] * 512
        # mke2fs writes inside the image at the partition's offset, its size given after the image.
        _mkfs_ext4(image, files, "-E", f"offset={start}", size=f"{size // 1024}k")

    return make


def swap(image: Path) -> None:
    """A swap signature: blkid reports it as a TYPE, but it is no filesystem anyone can mount."""
    _check(["mkswap", str(image)])


def ext4_with_stray_iso9660(files: dict[str, str]) -> Content:
    """ext4 holding `files`, plus an iso9660 descriptor left in unused blocks (what wipefs(8) is for).

    blkid -p then answers "ambivalent result" (exit status 8) and no TYPE, although the data is there.
    """

    def make(image: Path) -> None:
        # 4 KiB blocks leave 4-32 KiB unused; with 1 KiB blocks 32 KiB holds filesystem metadata.
        ext4(files, block_size=4096)(image)
        with image.open("r+b") as disk:
            disk.seek(32768)  # sector 16 of 2048 bytes: iso9660's primary volume descriptor
            disk.write(b"\x01CD001\x01")

    return make


def _mkfs_ext4(image: Path, files: dict[str, str], *options: str, size: str | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="inventiv-seed-") as seed:
        for name, text in files.items():
            (Path(seed) / name).write_text(text)
        _check(["mkfs.ext4", "-q", "-F", *options, "-d", seed, str(image), *([size] if size else [])])


# --- results ----------------------------------------------------------------------------------------


@dataclass
class Disk:
    volume_id: str
    image: Path
    device: str
    link: Path | None
    partitions: list[str] = field(default_factory=list)

    def signature(self) -> dict[str, str]:
        """blkid's low-level probe of the image (TYPE, UUID, PTTYPE, ...); {} for no signature."""
        probe = _run(["blkid", "--probe", "--output", "export", str(self.image)])
        lines = probe.stdout.splitlines() if probe.returncode == 0 else []
        return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("DEVNAME="))

    def read(self, path: str) -> str | None:
        """A file's text on the disk's ext4 filesystem (debugfs, nothing mounted), None when absent."""
        shown = _run(["debugfs", "-R", f"cat {path}", str(self.image)])
        return None if "not found" in shown.stderr or shown.returncode != 0 else shown.stdout

    def listing(self, path: str = "/") -> list[str]:
        shown = _run(["debugfs", "-R", f"ls -p {path}", str(self.image)])
        names = [line.split("/")[5] for line in shown.stdout.splitlines() if line.count("/") >= 6]
        return sorted(name for name in names if name not in (".", ".."))

    def digest(self) -> str:
        return hashlib.sha256(self.image.read_bytes()).hexdigest()


@dataclass
class BootResult:
    returncodes: list[int]
    log: str
    fstab: str
    # Mounts stacked on the data directory when the runs ended, seen inside the namespace (findmnt).
    data_dir_mounts: list[dict[str, str]]
    # What `ls -A` showed in the data directory, inside the namespace.
    data_dir_entries: list[str]
    docker_calls: list[list[str]]
    # Devices the mkfs/mke2fs guard let through, and every call a guard refused.
    formatted: list[str]
    refused: list[str]

    @property
    def mount(self) -> dict[str, str] | None:
        """The data directory's one mount (source, fstype, options), None when it is not a mountpoint."""
        assert len(self.data_dir_mounts) <= 1, f"mounts stacked on the data directory: {self.data_dir_mounts}"
        return self.data_dir_mounts[0] if self.data_dir_mounts else None

    def fstab_entries(self) -> list[list[str]]:
        return [line.split() for line in self.fstab.splitlines() if line.strip() and not line.startswith("#")]

    def docker_runs(self) -> list[list[str]]:
        return [call for call in self.docker_calls if call[:1] == ["run"]]


# --- the rig ----------------------------------------------------------------------------------------


class BootRig:
    """Loop-device disks, by-id links, stubs, a private fstab and root folder; `run` boots the script.

    Use as a context manager: loop devices are detached on exit, whatever happened.
    """

    def __init__(self, root: Path, *, script_path: str, data_dir: str, fstab: str = "# rig fstab\n") -> None:
        self.root = root
        self.script_path = script_path
        self.data_dir = data_dir
        self.data_parent = os.path.dirname(data_dir)
        # The bind over the data directory's parent must not hide the rig itself, nor the whole system.
        assert self.data_parent not in ("", "/"), data_dir
        assert not str(root.resolve()).startswith(self.data_parent + "/"), (root, data_dir)
        self.disks: list[Disk] = []
        self.links = root / "by-id"
        self.bin = root / "bin"
        self.state = root / "state"
        self.fstab = root / "fstab"
        # Stands for the root disk's copy of the data directory's parent (e.g. /var/lib).
        self.root_parent = root / "root-parent"
        for folder in (self.links, self.bin, self.state, self.root_parent):
            folder.mkdir(parents=True)
        self.fstab.write_text(fstab)
        (self.state / "allowed").write_text("")
        self._install_stubs()

    def __enter__(self) -> BootRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def hint(self) -> str:
        """The data device hint for the document: a glob over the rig's by-id links."""
        return f"{self.links}/{LINK_PREFIX}*"

    @property
    def root_data_dir(self) -> Path:
        """The data directory as it is on the (emulated) root disk, i.e. when nothing is mounted on it."""
        return self.root_parent / os.path.basename(self.data_dir)

    def disk(
        self,
        content: Content = blank,
        *,
        volume_id: str | None = None,
        size_mib: int = 16,
        link: str | None = LINK_PREFIX,
        partition_links: bool = True,
    ) -> Disk:
        """Writes a sparse image, fills it with `content`, attaches it and links `<link><volume id>` to it.

        Partitions get device nodes and, like udev's 60-persistent-storage rules make them, the links
        `<link><volume id>-part<N>` (unless partition_links is False): the hint's glob matches those too.
        """
        volume_id = volume_id or str(uuid.uuid4())
        image = self.root / f"disk-{len(self.disks)}-{volume_id}.img"
        image.write_bytes(b"")
        os.truncate(image, size_mib << 20)
        content(image)
        device = _check(["losetup", "--find", "--show", "--partscan", str(image)]).strip()
        disk = Disk(volume_id, image, device, None)
        self.disks.append(disk)
        disk.partitions = _partitions(device) if "PTTYPE" in disk.signature() else []
        with (self.state / "allowed").open("a") as allowed:
            allowed.writelines(f"{dev}\n" for dev in [device, *disk.partitions])
        if link is not None:
            disk.link = self.link(device, f"{link}{volume_id}")
            for partition in disk.partitions if partition_links else []:
                number = Path(f"/sys/class/block/{os.path.basename(partition)}/partition").read_text().strip()
                self.link(partition, f"{link}{volume_id}-part{number}")
        return disk

    def link(self, target: str, name: str) -> Path:
        """A by-id style link to any device (e.g. the host's root disk: the guards keep it safe)."""
        path = self.links / name
        path.symlink_to(target)
        return path

    def run(self, document: str, *, runs: int = 1, before: str = "") -> BootResult:
        """Boots once: a fresh namespace, the `before` shell snippet (as root, real tools), then the script
        `runs` times in a row. The rig's fstab, root folder and docker state persist across calls, as they
        do across reboots of a machine."""
        script = self.root / "boot-script"
        script.write_text(extract_script(document, self.script_path))
        script.chmod(0o755)
        out = Path(tempfile.mkdtemp(prefix="run-", dir=self.root))
        (out / "before.sh").write_text(before + "\n")
        (out / "namespace.sh").write_text(_NAMESPACE_SCRIPT)
        env = {
            "PATH": SYSTEM_PATH,
            "LC_ALL": "C",
            "HOME": "/root",
            # libblkid's cache (mount UUID=...) goes to the rig, not /run/blkid on the host.
            "BLKID_FILE": str(self.state / "blkid.tab"),
            "RIG_BIN": str(self.bin),
            "RIG_STATE": str(self.state),
            "RIG_FSTAB": str(self.fstab),
            "RIG_ROOT_PARENT": str(self.root_parent),
            "RIG_DATA_PARENT": self.data_parent,
            "RIG_DATA_DIR": self.data_dir,
            "RIG_SCRIPT": str(script),
            "RIG_RUNS": str(runs),
            "RIG_OUT": str(out),
        }
        command = ["unshare", "--mount", "--propagation", "private", "bash", str(out / "namespace.sh")]
        setup = _run_group(command, env)
        assert setup.returncode == 0, f"namespace setup failed ({setup.returncode}):\n{setup.stdout}{setup.stderr}"
        return self._result(out)

    def close(self) -> None:
        errors = []
        for disk in self.disks:
            detach = _run(["losetup", "--detach", disk.device])
            if detach.returncode != 0 or not _detached(disk):
                errors.append(f"{disk.device}: {detach.stderr.strip() or 'still attached'}")
        self.disks.clear()
        assert not errors, f"loop devices left attached: {errors}"

    def _result(self, out: Path) -> BootResult:
        mounts = json.loads(_read(out / "mounts.json") or '{"filesystems": []}')["filesystems"]
        return BootResult(
            returncodes=[int(line) for line in _read(out / "returncodes").split()],
            log=_read(out / "log"),
            fstab=self.fstab.read_text(),
            data_dir_mounts=[m for m in mounts if m["target"] == self.data_dir],
            data_dir_entries=_read(out / "entries").split(),
            docker_calls=[json.loads(line) for line in _read(self.state / "docker.jsonl").splitlines()],
            formatted=_read(self.state / "formatted").split(),
            refused=_read(self.state / "refused").splitlines(),
        )

    def _install_stubs(self) -> None:
        stubs = {
            "docker": _DOCKER_STUB.format(python=sys.executable),
            "nvidia-smi": _NVIDIA_SMI_STUB,
            "udevadm": "#!/bin/bash\nexit 0\n",
            "guard": _GUARD.format(python=sys.executable, system_path=SYSTEM_PATH),
        }
        for name, text in stubs.items():
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        for name in GUARDED:
            (self.bin / name).symlink_to("guard")


# Runs inside the private mount namespace. The binds come first and `set -e` stops everything if one
# fails, so the script can never reach the host's fstab or data directory.
_NAMESPACE_SCRIPT = """\
set -euo pipefail
mount --bind "$RIG_FSTAB" /etc/fstab
mount --bind "$RIG_ROOT_PARENT" "$RIG_DATA_PARENT"
source "$RIG_OUT/before.sh"
: >"$RIG_OUT/returncodes"
for _ in $(seq "$RIG_RUNS"); do
  rc=0
  PATH="$RIG_BIN:$PATH" "$RIG_SCRIPT" </dev/null >>"$RIG_OUT/log" 2>&1 || rc=$?
  echo "$rc" >>"$RIG_OUT/returncodes"
done
findmnt --json --list --output TARGET,SOURCE,FSTYPE,OPTIONS >"$RIG_OUT/mounts.json"
ls -A "$RIG_DATA_DIR" >"$RIG_OUT/entries" 2>/dev/null || true
"""

# `container inspect` finds only containers an earlier `run` created (none on the first boot).
_DOCKER_STUB = """\
#!{python} -I
import json, os, sys
state = os.environ["RIG_STATE"]
args = sys.argv[1:]
with open(os.path.join(state, "docker.jsonl"), "a") as calls:
    calls.write(json.dumps(args) + "\\n")
containers = os.path.join(state, "containers")
known = open(containers).read().split() if os.path.exists(containers) else []
if args[:2] == ["container", "inspect"]:
    missing = [name for name in args[2:] if not name.startswith("-") and name not in known]
    if missing:
        print("Error: No such container: " + missing[0], file=sys.stderr)
        sys.exit(1)
    print("[{{}}]")
elif args[:1] == ["run"] and "--name" in args:
    with open(containers, "a") as names:
        names.write(args[args.index("--name") + 1] + "\\n")
    print("0123456789ab")
"""

# One GPU, as `nvidia-smi -L` lists it.
_NVIDIA_SMI_STUB = """\
#!/bin/bash
[ "${1:-}" = "-L" ] && echo "GPU 0: NVIDIA H100 PCIe (UUID: GPU-00000000-0000-0000-0000-000000000000)"
exit 0
"""

# One program behind every guarded name: finds the block devices a call names (paths, UUID=/LABEL=, or
# for mount the fstab entries it would use), refuses any that is not a rig loop device, else execs the
# real tool with the same arguments.
_GUARD = """\
#!{python} -I
import os, shutil, stat, subprocess, sys
name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
state = os.environ["RIG_STATE"]
system_path = "{system_path}"
allowed = set(open(os.path.join(state, "allowed")).read().split())

def output(*command):
    done = subprocess.run(command, capture_output=True, text=True, env={{**os.environ, "PATH": system_path}})
    return done.stdout.split() if done.returncode == 0 else []

def device(arg):
    if arg.startswith(("UUID=", "LABEL=")):
        found = output("findfs", arg)
        return found[0] if found else None
    try:
        return os.path.realpath(arg) if stat.S_ISBLK(os.stat(arg).st_mode) else None
    except OSError:
        return None

devices = [d for d in map(device, args) if d]
if name == "mount" and not devices:
    if "-a" in args or "--all" in args:
        sources = output("findmnt", "--fstab", "--evaluate", "--raw", "--noheadings", "--output", "SOURCE")
    else:
        sources = [s for a in args if a.startswith("/") for s in output(
            "findmnt", "--fstab", "--evaluate", "--raw", "--noheadings", "--output", "SOURCE", "--mountpoint", a)]
    devices = [d for d in map(device, sources) if d]
refused = [d for d in devices if d not in allowed]
if refused:
    with open(os.path.join(state, "refused"), "a") as log:
        log.write(" ".join([name, *args]) + "\\n")
    print(f"rig guard: {{name}} refused on {{refused}}: not a rig loop device", file=sys.stderr)
    sys.exit(32 if name == "mount" else 1)
if name in ("mkfs.ext4", "mke2fs", "mkfs"):
    with open(os.path.join(state, "formatted"), "a") as log:
        log.writelines(d + "\\n" for d in devices)
os.execv(shutil.which(name, path=system_path), [name, *args])
"""


# --- helpers ----------------------------------------------------------------------------------------


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=SYSTEM_PATH)


def _run(command: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
        env={"PATH": SYSTEM_PATH, "LC_ALL": "C"},
    )


def _check(command: list[str], stdin: str | None = None) -> str:
    done = _run(command, stdin)
    assert done.returncode == 0, f"{' '.join(command)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


def _run_group(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs `command` in its own process group and kills the whole group on timeout, so no process is
    left holding the namespace (and its mounts, and the loop devices) open."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"boot timed out after {RUN_TIMEOUT_S} s:\n{stdout}{stderr}") from None
    finally:
        # Background children (none expected) would keep the namespace alive after bash exits.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _partitions(device: str) -> list[str]:
    """Adds the partitions of an attached image (the kernel's own scan may not: loop max_part=0) and lists
    their nodes."""
    _check(["partx", "--update", device])
    listed = _check(["lsblk", "--list", "--noheadings", "--paths", "--output", "NAME,TYPE", device])
    return [name for name, kind in (line.split() for line in listed.splitlines()) if kind == "part"]


def _detached(disk: Disk, timeout_s: float = 5.0) -> bool:
    """Waits for the device to let go of the image. A device still mounted in a namespace that is being
    torn down (its processes just killed) is only marked autoclear by `losetup -d`: the kernel detaches
    it when the last mount goes, a moment later."""
    backing = Path(f"/sys/block/{os.path.basename(disk.device)}/loop/backing_file")

    def let_go() -> bool:
        try:
            return not backing.read_text().startswith(str(disk.image))
        except OSError:
            return True

    try:
        return wait_until_sync(let_go, timeout_s=timeout_s, what=f"{disk.device} to detach")
    except AssertionError:
        return False


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""
