"""The VM's cloud-init user data: real `cloud-init schema`, Docker, its folders, a root that grows."""

from __future__ import annotations

from pathlib import Path

import cloud_init_schema
import yaml
from deploy_env import settings_for

from inventiv.deploy.user_data import vm_cloud_config


def test_passes_cloud_init_schema(tmp_path: Path) -> None:
    cloud_init_schema.require()
    cloud_init_schema.validate(vm_cloud_config(settings_for(tmp_path)))


def test_installs_docker_makes_the_folders_and_grows_the_root(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, SECRETS_DIR="/srv/inventiv/secrets", CONTAINER_GID=4242)
    config = yaml.safe_load(vm_cloud_config(settings))
    assert {"docker.io", "docker-compose-v2"} <= set(config["packages"])
    assert config["growpart"] == {"mode": "auto", "devices": ["/"]}
    assert config["resize_rootfs"] is True
    assert ["install", "-d", "-m", "0750", "-o", "root", "-g", "4242", "/srv/inventiv/secrets"] in config["runcmd"]
    assert ["docker", "pull", "registry.example.com/inventiv:0.1.0"] in config["runcmd"]
