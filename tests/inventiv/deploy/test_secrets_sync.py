"""`secrets sync` over real SSH (an asyncssh server in the test) to a VM found through the fake Scaleway:
the right folder, the right owner and mode, read back as the container user, atomic, pinned host key."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
from deploy_env import NOBODY, SECRETS, World, run_world
from tcp_proxy import TcpProxy

from inventiv.deploy import commands
from inventiv.deploy.errors import DeployError, HostKeyMismatch, SshUnreachable
from inventiv.deploy.remote import FINGERPRINTS_KEY
from inventiv.deploy.vm_settings import load
from providers.scaleway.client import ScalewayClient


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with run_world(tmp_path) as world:
        yield world



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


async def test_ssh_is_retried_until_the_vm_answers(world: World) -> None:
    # A VM that just booted: the port takes connections and drops them, three times, then sshd answers.
    proxy = await TcpProxy("127.0.0.1", world.ssh.port).start()
    proxy.cut()
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            proxy.restore()

    client = ScalewayClient(world.fake.secret_key, world.fake.url, sleep=pause)
    try:
        await commands.sync_secrets(client, world.settings(SSH_PORT=proxy.port))
    finally:
        await client.close()
        await proxy.close()
    assert pauses == [commands.SSH_RETRY_S] * 3
    assert set(_listing(world.secrets_dir)) == set(SECRETS)


async def test_ssh_gives_up_after_its_attempts(world: World) -> None:
    proxy = await TcpProxy("127.0.0.1", world.ssh.port).start()
    proxy.cut()
    try:
        with pytest.raises(SshUnreachable, match=rf"SSH to 127.0.0.1:{proxy.port}"):
            await commands.sync_secrets(world.client, world.settings(SSH_PORT=proxy.port))
    finally:
        await proxy.close()
