"""Env files of the control-plane VM for tests (`inventiv deploy`), read back through the real loader."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fake_scaleway import FakeScaleway, run_fake_scaleway
from ssh_server import SshVm, run_ssh_vm

from inventiv.deploy import vm
from inventiv.deploy.remote import FINGERPRINTS_KEY
from inventiv.deploy.vm_settings import VmSettings, load
from providers.scaleway.client import RetryPolicy, ScalewayClient

# A type the fake's Ubuntu image boots: PRO2-XS has no local disk (sbs root), DEV1-M has one (up to 40 GB).
SBS_TYPE = "PRO2-XS"
LOCAL_TYPE = "DEV1-M"


def write_env(folder: Path, env: str = "prod", **values: Any) -> Path:
    """deploy/env/<env>.env under `folder`: every required setting, overridden (or dropped, with None) by `values`."""
    settings: dict[str, Any] = {
        "DEPLOY_ENV": env,
        "SCW_SECRET_KEY": "test-secret-key",
        "SCW_DEFAULT_PROJECT_ID": "105bdce1-64c0-48ab-899d-868455867ecf",
        "SCW_DEFAULT_ZONE": "fr-par-1",
        "SCW_COMMERCIAL_TYPE": SBS_TYPE,
        "SCW_ROOT_VOLUME_SIZE_GB": 40,
        "SSH_ALLOWED_CIDRS": "198.51.100.0/24",
        "DOMAIN": f"{env}.inventiv.example.com",
        "DEPLOY_IMAGE": "registry.example.com/inventiv:0.1.0",
        **values,
    }
    path = folder / "deploy" / "env" / f"{env}.env"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in settings.items() if v is not None))
    return path


def settings_for(folder: Path, env: str = "prod", **values: Any) -> VmSettings:
    return load(env, str(write_env(folder, env, **values)))


def fake_client(fake: Any) -> ScalewayClient:
    """A client of the fake Scaleway that never waits: retries and polls pause for nothing."""

    async def no_sleep(_: float) -> None:
        return None

    return ScalewayClient(fake.secret_key, fake.url, retry=RetryPolicy(base_s=0.001), sleep=no_sleep)


def fake_values(fake: Any) -> dict[str, Any]:
    """The env file values that point the commands at the fake."""
    return {"SCW_API_URL": fake.url, "SCW_SECRET_KEY": fake.secret_key, "SCW_DEFAULT_PROJECT_ID": fake.project_id}


# nobody:nogroup, an unprivileged user every Debian has: stands for the containers' uid and gid.
NOBODY = 65534
SECRETS = {"inventiv.env": b"POSTGRES_PASSWORD=s3cret\n", "scw_secret_key": b"scw-key\n",
           "worker_secret_key": os.urandom(3 * 2**20)}  # fmt: skip


@dataclass
class World:
    fake: FakeScaleway
    client: ScalewayClient
    ssh: SshVm
    server_id: str
    tmp: Path

    @property
    def secrets_dir(self) -> Path:
        return self.ssh.workdir / "etc" / "inventiv" / "secrets"

    @property
    def deploy_dir(self) -> Path:
        return self.ssh.workdir / "opt" / "inventiv"

    def settings(self, **values: object) -> VmSettings:
        return settings_for(self.tmp, **{**self.values(), **values})

    def values(self) -> dict[str, object]:
        return {
            **fake_values(self.fake), "SSH_PORT": self.ssh.port, "SSH_KEY_FILE": self.ssh.client_key_path,
            "SECRETS_DIR": self.secrets_dir, "CONTAINER_UID": NOBODY, "CONTAINER_GID": NOBODY,
            "SECRET_FILES": ",".join(f"secrets/{name}" for name in SECRETS), "DEPLOY_DIR": self.deploy_dir,
        }  # fmt: skip


@asynccontextmanager
async def run_world(tmp_path: Path) -> AsyncIterator[World]:
    """A provisioned VM on the fake Scaleway whose address answers SSH (ssh_server.py), with local secrets."""
    _write_secrets(tmp_path / "deploy" / "env" / "secrets")
    async with run_fake_scaleway(polls_to_running=0) as fake, run_ssh_vm(tmp_path) as ssh:
        client = fake_client(fake)
        world = World(fake, client, ssh, "", tmp_path)
        server = await vm.provision(client, world.settings())
        world.server_id = server["id"]
        fake.user_data[server["id"]][FINGERPRINTS_KEY] = ssh.fingerprints
        yield world
        await client.close()


def _write_secrets(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, data in SECRETS.items():
        (folder / name).write_bytes(data)
