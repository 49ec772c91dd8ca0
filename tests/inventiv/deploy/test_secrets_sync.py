"""`secrets sync` over real SSH (an asyncssh server in the test) to a VM found through the fake Scaleway:
the right folder, the right owner and mode, read back as the container user, atomic, pinned host key."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
from deploy_env import fake_client, fake_values, settings_for
from fake_scaleway import FakeScaleway, run_fake_scaleway
from ssh_server import SshVm, run_ssh_vm

from inventiv.deploy import commands, vm
from inventiv.deploy.errors import DeployError, HostKeyMismatch
from inventiv.deploy.remote import FINGERPRINTS_KEY
from inventiv.deploy.vm_settings import VmSettings, load
from providers.scaleway.client import ScalewayClient

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

    def settings(self, **values: object) -> VmSettings:
        return settings_for(self.tmp, **{**self.values(), **values})

    def values(self) -> dict[str, object]:
        return {
            **fake_values(self.fake), "SSH_PORT": self.ssh.port, "SSH_KEY_FILE": self.ssh.client_key_path,
            "SECRETS_DIR": self.secrets_dir, "CONTAINER_UID": NOBODY, "CONTAINER_GID": NOBODY,
            "SECRET_FILES": ",".join(f"secrets/{name}" for name in SECRETS),
        }  # fmt: skip


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    local = tmp_path / "deploy" / "env" / "secrets"
    local.mkdir(parents=True)
    for name, data in SECRETS.items():
        (local / name).write_bytes(data)
    async with run_fake_scaleway(polls_to_running=0) as fake, run_ssh_vm(tmp_path) as ssh:
        client = fake_client(fake)
        world = World(fake, client, ssh, "", tmp_path)
        server = await vm.provision(client, world.settings())
        world.server_id = server["id"]
        fake.user_data[server["id"]][FINGERPRINTS_KEY] = ssh.fingerprints
        yield world
        await client.close()


def _listing(folder: Path) -> dict[str, tuple[int, int, int, bytes]]:
    found = {}
    for path in folder.iterdir():
        info = path.stat()
        found[path.name] = (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode), path.read_bytes())
    return found


async def test_secrets_land_in_the_folder_with_their_rights(world: World) -> None:
    await commands.sync_secrets(world.client, world.settings())
    assert _listing(world.secrets_dir) == {name: (0, NOBODY, 0o640, data) for name, data in SECRETS.items()}
    folder = world.secrets_dir.stat()
    assert (folder.st_uid, folder.st_gid, stat.S_IMODE(folder.st_mode)) == (0, NOBODY, 0o750)
    # The check ran as the container user, on the VM.
    assert any("setpriv --reuid" in c and c.endswith(" 65534 65534") for c in world.ssh.commands)


async def test_a_local_dotenv_with_another_secrets_dir_changes_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = world.ssh.workdir / "home" / "dev" / "secrets"
    (world.tmp / ".env").write_text(f"SECRETS_DIR={elsewhere}\n")
    monkeypatch.chdir(world.tmp)
    settings = load("prod", str(world.tmp / "deploy" / "env" / "prod.env"))
    await commands.sync_secrets(world.client, settings)
    assert set(_listing(world.secrets_dir)) == set(SECRETS)
    assert not elsewhere.exists()


async def test_a_wrong_host_key_is_refused(world: World) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519")
    world.fake.user_data[world.server_id][FINGERPRINTS_KEY] = f"256 {other.get_fingerprint('sha256')} root@x (ED25519)"
    with pytest.raises(HostKeyMismatch, match=r"not among the fingerprints Scaleway published"):
        await commands.sync_secrets(world.client, world.settings())
    assert world.ssh.commands == [] and not world.secrets_dir.exists()


async def test_an_interrupted_sync_leaves_no_half_written_file(world: World) -> None:
    settings = world.settings()
    await commands.sync_secrets(world.client, settings)
    before = _listing(world.secrets_dir)
    new = os.urandom(3 * 2**20)
    (world.tmp / "deploy" / "env" / "secrets" / "worker_secret_key").write_bytes(new)
    world.ssh.interrupt_writes_to, world.ssh.interrupt_after = "worker_secret_key", 2**20
    with pytest.raises(DeployError, match=r"worker_secret_key was interrupted .*the file there is unchanged"):
        await commands.sync_secrets(world.client, settings)
    assert world.ssh.interrupted == 1
    after = {name: entry for name, entry in _listing(world.secrets_dir).items() if not name.startswith(".")}
    assert after == before
    # The next sync completes it and sweeps the temporary the lost connection left.
    world.ssh.interrupt_writes_to = None
    await commands.sync_secrets(world.client, settings)
    final = _listing(world.secrets_dir)
    assert set(final) == set(SECRETS) and final["worker_secret_key"][3] == new


async def test_a_secret_the_container_user_cannot_reach_fails_the_check(world: World) -> None:
    # Right owner and mode, but a parent folder closed to everyone but root: the containers read nothing.
    world.secrets_dir.parent.mkdir(parents=True)
    world.secrets_dir.parent.chmod(0o700)
    with pytest.raises(DeployError, match=r"checking .*/secrets/inventiv.env failed on the VM .*Permission denied"):
        await commands.sync_secrets(world.client, world.settings())
