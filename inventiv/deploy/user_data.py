"""The `#cloud-config` user data of the control-plane VM: Docker with Compose, its folders, a root that grows.

- Docker and the Compose plugin from Ubuntu's archive (`docker.io`, `docker-compose-v2`), enabled at boot;
  the images of deploy/ (DEPLOY_IMAGE, postgres, redis, caddy) pulled once, so the first `up` is quick;
- DEPLOY_DIR (Compose files, root only) and SECRETS_DIR (root, group CONTAINER_GID, 0750: the containers'
  group may list and read what `secrets sync` puts there, no one else may even look);
- `growpart` on `/` and `resize_rootfs`: cloud-init runs both at every boot, so a root volume grown by
  `provision` is used in full after the next start (root_volume.py).
Every value comes from validated settings (absolute paths and an image reference of plain characters), and
goes into YAML flow lists that cloud-init passes to exec without a shell.
"""

from __future__ import annotations

import json

from inventiv.deploy.vm_settings import VmSettings

# Pinned with the Compose file (deploy/docker-compose.vm.yml): pulled ahead of the first `up`.
STACK_IMAGES = ("postgres:16", "redis:7", "caddy:2")


def vm_cloud_config(settings: VmSettings) -> str:
    def flow(words: list[str]) -> str:
        return json.dumps(words)  # a JSON array is a YAML flow sequence, every item quoted

    commands = [
        ["systemctl", "enable", "--now", "docker"],
        ["install", "-d", "-m", "0700", "-o", "root", "-g", "root", settings.deploy_dir],
        ["install", "-d", "-m", "0750", "-o", "root", "-g", str(settings.container_gid), settings.secrets_dir],
        *(["docker", "pull", image] for image in (settings.image, *STACK_IMAGES)),
    ]
    lines = [
        "#cloud-config",
        "package_update: true",
        "packages:",
        "  - docker.io",
        "  - docker-compose-v2",
        "growpart:",
        "  mode: auto",
        "  devices: ['/']",
        "resize_rootfs: true",
        "runcmd:",
        *(f"  - {flow(command)}" for command in commands),
    ]
    return "\n".join(lines) + "\n"
