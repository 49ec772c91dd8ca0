"""The `#cloud-config` user data that turns a GPU server into a serving worker at its first boot.

cloud-init writes one boot script and runs it once (`runcmd`). The script puts the Hugging Face cache
on the data volume when one is attached, then starts the worker container with a restart policy, so
Docker brings it back after every reboot without cloud-init. The GPU OS images ship the NVIDIA driver,
Docker and the NVIDIA container toolkit, so nothing is installed here.

Data volume: the first whole disk among the candidates (the devices matching the hint, or every disk)
that is neither the root disk nor mounted. It is formatted only when it carries no signature at all (a
persistent volume attached again keeps its cache; a partitioned disk is never wiped), mounted at
`/var/lib/inventiv` and recorded in fstab by UUID. Without one the cache stays on the root disk.

The worker token is deliberately absent: user data is readable from inside the instance, without
authentication, by any process (the metadata API), so it must hold nothing secret.

Every interpolated value is validated, then shell-quoted into the script's variable header; the script
sits in a YAML literal block, and validated values hold no character YAML or the shell could misread.
"""

from __future__ import annotations

import re
import shlex
import textwrap

# Where the data volume is mounted and the Hugging Face cache lives, on the host and in the container.
DATA_DIR = "/var/lib/inventiv"
# The port the worker listens on inside the container (vLLM's default).
CONTAINER_PORT = 8000
SCRIPT_PATH = "/usr/local/sbin/inventiv-worker-boot"

# Hugging Face repo ids: the characters they may hold, then their shape (`name` or `org/name`, each
# part starting with a letter or digit, so no path like `../x` or `/models/x` passes for one).
_MODEL = re.compile(r"[A-Za-z0-9._/-]+")
_MODEL_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
# Image references: registry[:port]/path[:tag][@sha256:digest].
_IMAGE = re.compile(r"[A-Za-z0-9._/:@-]+")
# Device paths and shell globs over them (/dev/disk/by-id/scsi-0SCW_sbs_volume-*).
_DEVICE_GLOB = re.compile(r"/[A-Za-z0-9._/*?-]+")


class CloudInitError(ValueError):
    """A value that cannot go into the user data; the provider turns it into InvalidRequest."""


def worker_cloud_config(model: str, *, port: int, image: str, data_device_hint: str | None) -> str:
    """The `#cloud-config` document that serves `model` with `image` on host port `port`.

    `data_device_hint`: a path or shell glob where the cloud's data volumes appear; None: look at every
    disk. Either way the root disk and mounted disks are skipped, and no candidate means the root disk.
    """
    _check(model, _MODEL, "model id")
    if not _MODEL_SHAPE.fullmatch(model):
        raise CloudInitError(f"model id {model!r} is not a Hugging Face repo id (org/name)")
    _check(image, _IMAGE, "worker image")
    if not 1 <= port <= 65535:
        raise CloudInitError(f"worker port must be 1-65535, not {port}")
    if data_device_hint is not None:
        _check(data_device_hint, _DEVICE_GLOB, "data device hint")
    header = "\n".join(
        f"{name}={shlex.quote(value)}"
        for name, value in (
            ("MODEL", model),
            ("IMAGE", image),
            ("HOST_PORT", str(port)),
            ("DATA_DEVICES", data_device_hint or ""),
        )
    )
    script = f"#!/bin/bash\nset -euo pipefail\n{header}\n{_BOOT_SCRIPT}"
    return (
        "#cloud-config\n"
        "write_files:\n"
        f"  - path: {SCRIPT_PATH}\n"
        "    permissions: '0755'\n"
        "    content: |\n"
        f"{textwrap.indent(script, '      ')}"
        "runcmd:\n"
        f"  - [{SCRIPT_PATH}]\n"
    )


def _check(value: str, allowed: re.Pattern[str], what: str) -> None:
    if not allowed.fullmatch(value):
        raise CloudInitError(f"{what} {value!r} holds characters outside {allowed.pattern}")


# Reads MODEL, IMAGE, HOST_PORT and DATA_DEVICES from the header above it: only module constants are
# formatted into this text, every value of the request reaches it through a quoted shell variable.
_BOOT_SCRIPT = f"""\
DATA_DIR={DATA_DIR}

log() {{ echo "inventiv-worker-boot: $*" >&2; }}

root_disk() {{
  local source parent
  source=$(findmnt -no SOURCE /)
  parent=$(lsblk -no PKNAME "$source" | head -n 1)
  basename "${{parent:-$source}}"
}}

candidates() {{
  if [ -n "$DATA_DEVICES" ]; then
    # Unquoted on purpose: DATA_DEVICES is a glob over device links.
    for link in $DATA_DEVICES; do
      if [ -e "$link" ]; then readlink -f "$link"; fi
    done
  else
    lsblk -dpno NAME,TYPE | awk '$2 == "disk" {{ print $1 }}'
  fi
}}

mount_data_volume() {{
  local root dev fstype uuid
  udevadm settle || true
  root=$(root_disk)
  for dev in $(candidates | sort -u); do
    [ "$(basename "$dev")" = "$root" ] && continue
    # A mounted filesystem on the disk or any of its partitions: in use, not ours.
    if lsblk -no MOUNTPOINT "$dev" | grep -q .; then continue; fi
    fstype=$(blkid -p -o value -s TYPE "$dev" || true)
    if [ -z "$fstype" ]; then
      # A partition table or another signature: someone's data, never wiped.
      if blkid -p "$dev" >/dev/null 2>&1; then continue; fi
      log "formatting $dev"
      mkfs.ext4 -q -L inventiv-data "$dev"
      fstype=ext4
    fi
    uuid=$(blkid -p -o value -s UUID "$dev")
    mkdir -p "$DATA_DIR"
    if ! grep -q "^UUID=$uuid " /etc/fstab; then
      echo "UUID=$uuid $DATA_DIR $fstype defaults,nofail 0 2" >> /etc/fstab
    fi
    mountpoint -q "$DATA_DIR" || mount "$DATA_DIR"
    log "data volume $dev mounted at $DATA_DIR"
    return 0
  done
  log "no data volume: the model cache stays on the root disk"
}}

start_worker() {{
  local gpus
  if docker container inspect inventiv-worker >/dev/null 2>&1; then
    log "worker container already exists"
    return 0
  fi
  gpus=$(nvidia-smi -L | grep -c '^GPU' || true)
  [ "$gpus" -ge 1 ] || gpus=1
  docker run -d --name inventiv-worker --gpus all --restart unless-stopped --ipc host \\
    -p "$HOST_PORT:{CONTAINER_PORT}" \\
    -v "$DATA_DIR:$DATA_DIR" -e "HF_HOME=$DATA_DIR/huggingface" \\
    "$IMAGE" --model "$MODEL" --host 0.0.0.0 --port {CONTAINER_PORT} --tensor-parallel-size "$gpus"
}}

mount_data_volume
mkdir -p "$DATA_DIR/huggingface"
start_worker
"""
