"""The VM's root volume: how big it is, and how to make it as big as SCW_ROOT_VOLUME_SIZE_GB says.

Scaleway's default root is 10 GB; Docker's images, Postgres and the logs outgrow it. A new server gets the
size at create; an existing one that is smaller is grown, never shrunk, the way its kind allows. The kind is
read from the server's volume "0" (the root, whatever its boot flag says: SCALEWAY.md):
- `sbs_volume` (Block Storage): `PATCH /block/v1alpha1/zones/{zone}/volumes/{id} {"size": bytes}`, online
  ("Increasing the size of Block Storage volumes via the Scaleway API", scaleway.com/en/docs/block-storage/
  api-cli/increasing-volume-size; sizes only go up);
- `l_ssd` (local): `PATCH /instance/v1/zones/{zone}/volumes/{id} {"size": bytes}` (scaleway-sdk-python,
  instance/v1 `update_volume`: "Replace the name and/or size properties of a volume"), with the server
  stopped first and started again after. Older SDK texts said only `b_ssd` could grow: a refusal is reported
  as such, naming the volume.
Either way the partition and the filesystem follow at the next boot: cloud-init's growpart and resize_rootfs
run at every boot (user_data.py asks for them explicitly).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from inventiv.deploy.errors import DeployError

ROOT_SLOT = "0"


class Resize(enum.Enum):
    NONE = "none"
    BLOCK = "block"  # online, through the Block API
    LOCAL = "local"  # through the Instance API, server stopped


@dataclass(frozen=True, slots=True)
class RootVolume:
    id: str
    kind: str  # the server entry's volume_type: sbs_volume, l_ssd
    size_bytes: int


def root_entry(server: dict[str, Any]) -> dict[str, Any]:
    entry = (server.get("volumes") or {}).get(ROOT_SLOT)
    if not entry or not entry.get("id"):
        raise DeployError(f"server {server.get('id')} has no root volume (slot {ROOT_SLOT})")
    return dict(entry)


def resize_for(root: RootVolume, wanted_bytes: int) -> Resize:
    """What growing `root` to `wanted_bytes` takes; NONE when it is big enough (a bigger root is kept)."""
    if root.size_bytes >= wanted_bytes:
        return Resize.NONE
    if root.kind == "sbs_volume":
        return Resize.BLOCK
    if root.kind == "l_ssd":
        return Resize.LOCAL
    raise DeployError(f"root volume {root.id} is a {root.kind!r} volume, which cannot be grown here")


def create_volumes(kind: str, size_bytes: int) -> dict[str, Any]:
    """The `volumes` of a server create: only the root, of this kind and size."""
    return {ROOT_SLOT: {"size": size_bytes, "volume_type": kind}}
