"""SSH to the VM (asyncssh), its host key checked against what Scaleway published for it.

Scaleway's images run `scw-generate-ssh-keys` at first boot: it makes the SSH server's host keys and stores
their fingerprints in the server's user data under `ssh-host-fingerprints` ("User data is a key value store
API ... Scaleway images contain the script scw-generate-ssh-keys which generates SSH server's host keys then
stores their fingerprints as user data under the key ssh-host-fingerprints", Scaleway's `scw instance
user-data` CLI help). We read that key through the authenticated Instance API and accept only a host key whose
fingerprint is in it: the first connection to a new VM is as safe as the hundredth, with no known_hosts file.

asyncssh: `known_hosts` given as three lists (trusted host keys, CA keys, revoked keys; here all empty) makes
it ask the client's `validate_host_public_key(host, addr, port, key)` about every key it was not given, and
a False there fails the handshake before we authenticate (asyncssh known_hosts.py `match_known_hosts`,
client.py `SSHClient.validate_host_public_key`, connection.py `_validate_host_key`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

import asyncssh

from inventiv.deploy.errors import DeployError, HostKeyMismatch, SshUnreachable
from inventiv.deploy.vm_settings import VmSettings
from providers.base import NotFound
from providers.scaleway.client import ScalewayClient

FINGERPRINTS_KEY = "ssh-host-fingerprints"
# `ssh-keygen -l` prints `SHA256:<unpadded base64>` (OpenSSH >= 6.8) or, older, 16 colon-separated hex pairs.
_SHA256 = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_MD5 = re.compile(r"(?:MD5:)?((?:[0-9a-f]{2}:){15}[0-9a-f]{2})", re.IGNORECASE)
# The image writes the key a few seconds into the first boot; polled every 5 s for up to 5 minutes.
FINGERPRINT_POLLS = 60
FINGERPRINT_POLL_S = 5.0
# A VM that does not answer SSH in this long is down, or its group or the address is wrong.
CONNECT_TIMEOUT_S = 30.0


def parse_fingerprints(text: str) -> frozenset[str]:
    """The fingerprints in the published text, as asyncssh writes them (`SHA256:...`, `MD5:aa:bb:...`)."""
    found = set(_SHA256.findall(text))
    found.update(f"MD5:{match.lower()}" for match in _MD5.findall(text))
    return frozenset(found)


def key_matches(key: asyncssh.SSHKey, fingerprints: Iterable[str]) -> bool:
    allowed = set(fingerprints)
    return key.get_fingerprint("sha256") in allowed or key.get_fingerprint("md5") in allowed


async def published_fingerprints(client: ScalewayClient, zone: str, server_id: str) -> frozenset[str]:
    path = f"/instance/v1/zones/{zone}/servers/{server_id}/user_data/{FINGERPRINTS_KEY}"
    for _ in range(FINGERPRINT_POLLS):
        try:
            reply = await client.request("GET", path)
        except NotFound:
            await client.pause(FINGERPRINT_POLL_S)
            continue
        fingerprints = parse_fingerprints(reply.raw.decode(errors="replace"))
        if fingerprints:
            return fingerprints
        await client.pause(FINGERPRINT_POLL_S)
    raise DeployError(f"server {server_id} published no SSH host key fingerprints ({FINGERPRINTS_KEY})")


class _PinnedHostKey(asyncssh.SSHClient):
    def __init__(self, fingerprints: frozenset[str]) -> None:
        self._fingerprints = fingerprints

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        return key_matches(key, self._fingerprints)


async def connect(settings: VmSettings, address: str, fingerprints: frozenset[str]) -> asyncssh.SSHClientConnection:
    """An SSH connection to the VM as SSH_USER with SSH_KEY_FILE; HostKeyMismatch for any other host key."""
    try:
        conn, _ = await asyncssh.create_connection(
            lambda: _PinnedHostKey(fingerprints),
            address,
            port=settings.ssh_port,
            username=settings.ssh_user,
            client_keys=[str(settings.ssh_key_path)],
            known_hosts=([], [], []),
            agent_path=None,
            config=[],
            connect_timeout=CONNECT_TIMEOUT_S,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostKeyMismatch(
            f"{address}:{settings.ssh_port} offered a host key that is not among the fingerprints Scaleway "
            f"published for the server ({exc.reason}); refusing to connect"
        ) from None
    except (OSError, asyncssh.ConnectionLost) as exc:
        raise SshUnreachable(f"SSH to {address}:{settings.ssh_port}: {exc or type(exc).__name__}") from None
    except asyncssh.Error as exc:
        raise DeployError(f"SSH to {settings.ssh_user}@{address}:{settings.ssh_port} failed: {exc}") from None
    return conn


async def run(conn: asyncssh.SSHClientConnection, *words: str, what: str) -> str:
    """Run one command (its words quoted) on the VM; DeployError with its stderr when it fails."""
    command = " ".join(shlex.quote(word) for word in words)
    return await run_shell(conn, command, what=what)


async def run_shell(conn: asyncssh.SSHClientConnection, command: str, *, what: str) -> str:
    result = await conn.run(command, check=False)
    if result.exit_status != 0:
        stderr = str(result.stderr or "").strip().splitlines()
        raise DeployError(f"{what} failed on the VM (exit status {result.exit_status}): {' '.join(stderr[-3:])}")
    return str(result.stdout or "")
