"""The `#cloud-config` user data that turns a GPU server into a serving worker at its first boot.

cloud-init writes two root-only environment files and one boot script, then runs the script once
(`runcmd`). The script puts the model cache on the data volume when one is attached, then starts the
engine's container (and the worker agent's, when a gateway URL is configured) with a restart policy, so
Docker brings them back after every reboot without cloud-init. The GPU OS images ship the NVIDIA driver,
Docker and the NVIDIA container toolkit, so nothing is installed here.

Secrets: the worker secret (the engine's API key, inventiv/worker_secrets.py) and the Hugging Face token
go into `/etc/inventiv/worker.env` and `/etc/inventiv/agent.env`, mode 0600, read by `docker run
--env-file`; never onto a command line. On Scaleway, user data is served by the metadata API only to
requests from a privileged source port, i.e. to root on the server (and to holders of the API key), so
root-only is the bar it meets. SGLang takes its key only as `--api-key`: the container's own shell
passes it from its environment.

Data volume: the first whole disk among the candidates (the devices matching the hint, or every disk)
that is neither the root disk nor mounted. A disk with no signature at all is formatted ext4; one that
already holds ext4 is kept (a persistent volume attached again keeps its cache); anything else (a
partition table, swap, LVM, LUKS, a signature blkid cannot read cleanly) is someone's data and never
touched. The volume is mounted first and recorded in fstab by UUID only once the mount worked. Without
one the cache stays on the root disk.

Every interpolated value is validated, then shell-quoted into the script's variable header or written
raw into an environment file; the script sits in a YAML literal block, and validated values hold no
character YAML, the shell or Docker's env-file format could misread.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from dataclasses import dataclass, field

from worker.engines import CONTAINER_PORT, Engine, EngineName

# Where the data volume is mounted and the model caches live, on the host and in the containers.
DATA_DIR = "/var/lib/inventiv"
SCRIPT_PATH = "/usr/local/sbin/inventiv-worker-boot"
WORKER_ENV = "/etc/inventiv/worker.env"
AGENT_ENV = "/etc/inventiv/agent.env"

# Hugging Face repo ids: the characters they may hold, then their shape (`name` or `org/name`, each part
# starting with a letter or digit, so no path like `../x` or `/models/x` passes for one); llama.cpp adds
# a `:quant` suffix.
_MODEL = re.compile(r"[A-Za-z0-9._/:-]+")
_MODEL_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?(:[A-Za-z0-9._-]+)?")
# Image references: registry[:port]/path[:tag][@sha256:digest].
_IMAGE = re.compile(r"[A-Za-z0-9._/:@-]+")
# Device paths and shell globs over them (/dev/disk/by-id/scsi-0SCW_sbs_volume-*).
_DEVICE_GLOB = re.compile(r"/[A-Za-z0-9._/*?-]+")
# Secrets and tokens: URL-safe base64 and Hugging Face's `hf_...` tokens.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,256}")
_URL = re.compile(r"https?://[A-Za-z0-9._:/-]+")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class CloudInitError(ValueError):
    """A value that cannot go into the user data; the provider turns it into InvalidRequest."""


@dataclass(frozen=True)
class AgentBoot:
    """The worker agent beside the engine: where it reports, and as whom."""

    gateway_url: str
    image: str
    instance_id: str
    interval_s: float = 10.0


@dataclass(frozen=True)
class WorkerBoot:
    """Everything a worker's first boot needs."""

    model: str
    engine: Engine
    image: str
    port: int
    secret: str = field(repr=False)
    data_device_hint: str | None = None
    hf_token: str | None = field(default=None, repr=False)
    agent: AgentBoot | None = None


def worker_cloud_config(boot: WorkerBoot) -> str:
    """The `#cloud-config` document that serves `boot.model` with `boot.engine` on host port `boot.port`.

    `data_device_hint`: a path or shell glob where the cloud's data volumes appear; None: look at every
    disk. Either way the root disk and mounted disks are skipped, and no candidate means the root disk.
    """
    _validate(boot)
    header = "\n".join(
        f"{name}={shlex.quote(value)}"
        for name, value in (
            ("MODEL", boot.model),
            ("IMAGE", boot.image),
            ("HOST_PORT", str(boot.port)),
            ("DATA_DEVICES", boot.data_device_hint or ""),
            ("AGENT_IMAGE", boot.agent.image if boot.agent else ""),
        )
    )
    script = f"#!/bin/bash\nset -euo pipefail\n{header}\n{_engine_function(boot.engine)}\n{_BOOT_SCRIPT}"
    files = [_file(WORKER_ENV, "0600", _worker_env(boot))]
    if boot.agent is not None:
        files.append(_file(AGENT_ENV, "0600", _agent_env(boot, boot.agent)))
    files.append(_file(SCRIPT_PATH, "0755", script))
    return "#cloud-config\nwrite_files:\n" + "".join(files) + f"runcmd:\n  - [{SCRIPT_PATH}]\n"


def _file(path: str, permissions: str, content: str) -> str:
    return (
        f"  - path: {path}\n"
        "    owner: root:root\n"
        f"    permissions: '{permissions}'\n"
        "    content: |\n"
        f"{textwrap.indent(content, '      ')}"
    )


def _worker_env(boot: WorkerBoot) -> str:
    # Docker's env-file takes values raw (quotes would be kept): validated values need none.
    lines = [f"INVENTIV_API_KEY={boot.secret}", f"INVENTIV_MODEL={boot.model}", f"INVENTIV_PORT={CONTAINER_PORT}"]
    if boot.engine.key_env and boot.engine.key_env != "INVENTIV_API_KEY":
        lines.append(f"{boot.engine.key_env}={boot.secret}")
    if boot.hf_token:
        lines.append(f"HF_TOKEN={boot.hf_token}")
    return "\n".join(lines) + "\n"


def _agent_env(boot: WorkerBoot, agent: AgentBoot) -> str:
    lines = [
        f"INVENTIV_AGENT_GATEWAY_URL={agent.gateway_url}",
        f"INVENTIV_AGENT_INSTANCE_ID={agent.instance_id}",
        f"INVENTIV_AGENT_SECRET={boot.secret}",
        f"INVENTIV_AGENT_ENGINE={boot.engine.name.value}",
        f"INVENTIV_AGENT_MODEL={boot.model}",
        f"INVENTIV_AGENT_ENGINE_URL=http://127.0.0.1:{boot.port}",
        f"INVENTIV_AGENT_DATA_DIR={DATA_DIR}",
        f"INVENTIV_AGENT_INTERVAL_S={agent.interval_s:g}",
    ]
    return "\n".join(lines) + "\n"


def _validate(boot: WorkerBoot) -> None:
    _check(boot.model, _MODEL, "model id")
    if not _MODEL_SHAPE.fullmatch(boot.model):
        raise CloudInitError(f"model id {boot.model!r} is not a Hugging Face repo id (org/name)")
    if ":" in boot.model and boot.engine.name is not EngineName.LLAMA_CPP:
        raise CloudInitError(f"model id {boot.model!r}: a `:quant` suffix is for the llama_cpp engine only")
    if not boot.image:
        raise CloudInitError(f"no container image for the {boot.engine.name.value} engine: set its image setting")
    _check(boot.image, _IMAGE, "worker image")
    if not 1 <= boot.port <= 65535:
        raise CloudInitError(f"worker port must be 1-65535, not {boot.port}")
    if boot.data_device_hint is not None:
        _check(boot.data_device_hint, _DEVICE_GLOB, "data device hint")
    # Never echo a secret in an error: say what is wrong with it, not what it is.
    if not _TOKEN.fullmatch(boot.secret):
        raise CloudInitError("the worker secret must be 16-256 URL-safe characters")
    if boot.hf_token is not None and not _TOKEN.fullmatch(boot.hf_token):
        raise CloudInitError("INVENTIV_HF_TOKEN must be 16-256 characters of [A-Za-z0-9_-]")
    if boot.agent is not None:
        _check(boot.agent.gateway_url, _URL, "agent gateway URL")
        _check(boot.agent.image, _IMAGE, "agent image")
        _check(boot.agent.instance_id, _UUID, "instance id")


def _check(value: str, allowed: re.Pattern[str], what: str) -> None:
    if not allowed.fullmatch(value):
        raise CloudInitError(f"{what} {value!r} holds characters outside {allowed.pattern}")


_VARIABLES = {"$MODEL": '"$MODEL"', "$gpus": '"$gpus"'}


def _engine_function(engine: Engine) -> str:
    """`engine_args`: the engine's command line after the image name, as a bash array. The model and the
    GPU count are shell variables of the script; everything else is a quoted literal."""
    words = " ".join(_VARIABLES.get(word) or shlex.quote(word) for word in engine.arguments("$MODEL", "$gpus"))
    return f"engine_args() {{\n  local gpus=$1\n  args=({words})\n}}\n"


# Reads MODEL, IMAGE, HOST_PORT, DATA_DEVICES and AGENT_IMAGE from the header above it and engine_args
# from the function before it: only module constants are formatted into this text, every value of the
# request reaches it through a quoted shell variable.
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

# ext4 on the device: ours (made blank or kept); prints nothing for a disk that is not to be touched.
claim_device() {{
  local dev=$1 probe=0 fstype
  blkid -p "$dev" >/dev/null 2>&1 || probe=$?
  # blkid -p: 0 found a signature, 2 found none; anything else (8: ambivalent, I/O error): hands off.
  if [ "$probe" -eq 2 ]; then
    log "formatting $dev"
    mkfs.ext4 -q -L inventiv-data "$dev"
  elif [ "$probe" -ne 0 ]; then
    log "skipping $dev: blkid exit status $probe"
    return 0
  fi
  fstype=$(blkid -p -o value -s TYPE "$dev" || true)
  if [ "$fstype" != ext4 ]; then
    log "skipping $dev: ${{fstype:-a partition table}}, not ours"
    return 0
  fi
  echo ext4
}}

mount_data_volume() {{
  local root dev uuid
  udevadm settle || true
  if mountpoint -q "$DATA_DIR"; then
    log "data volume already mounted at $DATA_DIR"
    return 0
  fi
  root=$(root_disk)
  for dev in $(candidates | sort -u); do
    [ "$(basename "$dev")" = "$root" ] && continue
    # Whole disks only: the hint's glob also matches udev's <volume>-partN links.
    [ -e "/sys/class/block/$(basename "$dev")/partition" ] && continue
    # A mounted filesystem on the disk or any of its partitions: in use, not ours.
    if lsblk -no MOUNTPOINT "$dev" 2>/dev/null | grep -q .; then continue; fi
    [ "$(claim_device "$dev")" = ext4 ] || continue
    uuid=$(blkid -p -o value -s UUID "$dev")
    mkdir -p "$DATA_DIR"
    if ! mount -t ext4 "$dev" "$DATA_DIR"; then
      log "could not mount $dev; the model cache stays on the root disk"
      return 0
    fi
    if ! grep -q "^UUID=$uuid " /etc/fstab; then
      echo "UUID=$uuid $DATA_DIR ext4 defaults,nofail 0 2" >> /etc/fstab
    fi
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
  engine_args "$gpus"
  docker run -d --name inventiv-worker --gpus all --restart unless-stopped --ipc host \\
    -p "$HOST_PORT:{CONTAINER_PORT}" -v "$DATA_DIR:$DATA_DIR" --env-file {WORKER_ENV} \\
    -e "HF_HOME=$DATA_DIR/huggingface" -e "LLAMA_CACHE=$DATA_DIR/llama.cpp" \\
    "$IMAGE" "${{args[@]}}"
}}

start_agent() {{
  if [ -z "$AGENT_IMAGE" ]; then
    return 0
  fi
  if docker container inspect inventiv-agent >/dev/null 2>&1; then
    log "agent container already exists"
    return 0
  fi
  # Host network: it reaches the engine on 127.0.0.1 and the gateway as the host does.
  docker run -d --name inventiv-agent --gpus all --restart unless-stopped --network host \\
    -v "$DATA_DIR:$DATA_DIR:ro" --env-file {AGENT_ENV} "$AGENT_IMAGE" agent
}}

mount_data_volume
mkdir -p "$DATA_DIR/huggingface" "$DATA_DIR/llama.cpp"
start_worker
start_agent
"""
