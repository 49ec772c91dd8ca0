"""An SSH server in the test process (asyncssh) that stands for the control-plane VM.

It accepts one client key, serves SFTP on this machine's real filesystem, and runs every command it is sent
with `sh -c` in `workdir` (a fresh folder any user may traverse, removed afterwards), PATH starting with
`bin_dir` (where a test puts stand-ins such as `docker`): files really get written, chowned, chmodded,
renamed and read, as root (the tests run as root). `fingerprints` is what Scaleway would publish for it in
the server's `ssh-host-fingerprints` user data.

`interrupt_writes_to`: a file name fragment; the connection is dropped in the middle of an SFTP write to such
a file once `interrupt_after` bytes of it were written, as a lost network would.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh


@dataclass
class SshVm:
    host_key: asyncssh.SSHKey
    client_key_path: Path
    workdir: Path
    bin_dir: Path
    port: int = 0
    commands: list[str] = field(default_factory=list)
    interrupt_writes_to: str | None = None
    interrupt_after: int = 0
    interrupted: int = 0

    @property
    def fingerprints(self) -> str:
        """As `ssh-keygen -l` prints them, one key a line."""
        key = self.host_key
        return f"256 {key.get_fingerprint('sha256')} root@inventiv-vm ({key.get_algorithm()})\n"


class _InterruptingSFTP(asyncssh.SFTPServer):
    vm: SshVm

    def __init__(self, chan: asyncssh.SSHServerChannel) -> None:
        super().__init__(chan)
        self._written: dict[int, int] = {}

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        vm = self.vm
        if vm.interrupt_writes_to and vm.interrupt_writes_to in str(getattr(file_obj, "name", "")):
            done = self._written.get(id(file_obj), 0)
            kept = data[: max(0, vm.interrupt_after - done)]
            if len(kept) < len(data):
                # What made it to the disk before the connection broke stays there, as it would.
                super().write(file_obj, offset, kept)
                vm.interrupted += 1
                self.channel.get_connection().abort()
                raise asyncssh.ConnectionLost("interrupted by the test")
            self._written[id(file_obj)] = done + len(data)
        return int(super().write(file_obj, offset, data))


async def _run_command(vm: SshVm, process: asyncssh.SSHServerProcess[str]) -> None:
    command = process.command or ""
    vm.commands.append(command)
    env = {**os.environ, "PATH": f"{vm.bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    child = await asyncio.create_subprocess_exec(
        "sh", "-c", command, cwd=vm.workdir, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await child.communicate()
    process.stdout.write(stdout.decode())
    process.stderr.write(stderr.decode())
    process.exit(child.returncode or 0)


def _make_vm(tmp: Path, client_key: asyncssh.SSHKey) -> SshVm:
    client_key_path = tmp / "id_ed25519"
    client_key.write_private_key(str(client_key_path))
    client_key_path.chmod(0o600)
    # The VM's files live outside pytest's root-only tmp folder: the container user must reach them, as on a VM.
    workdir = Path(tempfile.mkdtemp(prefix="inventiv-vm-"))
    workdir.chmod(0o755)
    bin_dir = tmp / "vm-bin"
    bin_dir.mkdir()
    return SshVm(asyncssh.generate_private_key("ssh-ed25519"), client_key_path, workdir, bin_dir)


@asynccontextmanager
async def run_ssh_vm(tmp: Path) -> AsyncIterator[SshVm]:
    """The server on 127.0.0.1 (a free port) until the block ends."""
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    vm = _make_vm(tmp, client_key)
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    sftp = type("BoundSFTP", (_InterruptingSFTP,), {"vm": vm})
    server = await asyncssh.create_server(
        asyncssh.SSHServer, "127.0.0.1", 0, server_host_keys=[vm.host_key], authorized_client_keys=authorized,
        sftp_factory=sftp, process_factory=lambda process: _run_command(vm, process), encoding="utf-8",
    )  # fmt: skip
    vm.port = server.sockets[0].getsockname()[1]
    try:
        yield vm
    finally:
        server.close()
        await server.wait_closed()
        shutil.rmtree(vm.workdir)
