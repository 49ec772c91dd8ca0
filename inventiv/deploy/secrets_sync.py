"""`secrets sync`: every file of SECRET_FILES into SECRETS_DIR on the VM, whole or not at all, then checked.

Each file is written over SFTP to a hidden temporary name in the same folder (created 0600, so never readable
by anyone else even half-written), flushed to disk, given its owner (root), group (CONTAINER_GID) and mode
(0640), and only then renamed over the final name: a rename within one filesystem is atomic, so a reader (or
an interrupted sync) sees the old file or the new one, never a part. Temporaries left by an interrupted sync
are deleted at the start of the next one.

Then each file is checked from the VM itself: owner, group and mode as above (nothing for "others"), and its
SHA-256, read by the container user (`setpriv` to CONTAINER_UID:CONTAINER_GID with no other groups), equal to
the local file's: present, complete and readable by the containers.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import asyncssh

from inventiv.deploy import remote
from inventiv.deploy.errors import DeployError
from inventiv.deploy.vm_settings import VmSettings

log = logging.getLogger(__name__)

# Root writes, the containers' group reads, no one else sees: neither the files nor the folder's listing.
SECRET_MODE = 0o640
DIR_MODE = 0o750
TEMP_MODE = 0o600
ROOT_UID = 0
TEMP_MARK = ".tmp-"


@dataclass(frozen=True, slots=True)
class Upload:
    local: Path
    remote: str
    temp: str
    sha256: str


def plan(settings: VmSettings, token: str) -> list[Upload]:
    """Where each secret goes, and the temporary name it is written under first."""
    folder = PurePosixPath(settings.secrets_dir)
    uploads = []
    for path in settings.secret_paths:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        uploads.append(Upload(path, str(folder / path.name), str(folder / f".{path.name}{TEMP_MARK}{token}"), digest))
    return uploads


def verify_command(settings: VmSettings, remote_path: str) -> list[str]:
    """Prints `uid gid mode` of the file, then its SHA-256 as read by the container user."""
    return [
        "sh", "-c", 'stat -c "%u %g %a" "$1" && setpriv --reuid "$2" --regid "$3" --clear-groups sha256sum "$1"',
        "verify", remote_path, str(settings.container_uid), str(settings.container_gid),
    ]  # fmt: skip


def check_verify_output(settings: VmSettings, upload: Upload, output: str) -> None:
    """DeployError naming the file unless it is root-owned, group CONTAINER_GID, 0640 and complete."""
    lines = [line.split() for line in output.splitlines()] + [[], []]
    owner, digest = lines[0], (lines[1] or [""])[0]
    expected = [str(ROOT_UID), str(settings.container_gid), f"{SECRET_MODE:o}"]
    if owner != expected:
        raise DeployError(f"{upload.remote}: owner, group and mode are {' '.join(owner)}, not {' '.join(expected)}")
    if digest != upload.sha256:
        raise DeployError(f"{upload.remote} differs from {upload.local} as read by uid {settings.container_uid}")


async def sync(conn: asyncssh.SSHClientConnection, settings: VmSettings) -> list[str]:
    """Pushes and checks every secret; returns the remote paths."""
    uploads = plan(settings, secrets.token_hex(8))
    if not uploads:
        raise DeployError("SECRET_FILES lists no file: nothing to sync")
    await prepare_folder(conn, settings.secrets_dir, settings.container_gid)
    async with conn.start_sftp_client() as sftp:
        for upload in uploads:
            await put_atomically(sftp, upload.local.read_bytes(), upload.temp, upload.remote,
                                 gid=settings.container_gid, mode=SECRET_MODE)  # fmt: skip
    for upload in uploads:
        output = await remote.run(conn, *verify_command(settings, upload.remote), what=f"checking {upload.remote}")
        check_verify_output(settings, upload, output)
    log.info("secrets synced", extra={"folder": settings.secrets_dir, "files": [u.local.name for u in uploads]})
    return [upload.remote for upload in uploads]


async def prepare_folder(conn: asyncssh.SSHClientConnection, folder: str, gid: int) -> None:
    """The folder with its owner and mode, emptied of the temporaries of an interrupted sync."""
    await remote.run(conn, "install", "-d", "-m", f"{DIR_MODE:o}", "-o", str(ROOT_UID), "-g", str(gid), folder,
                     what=f"creating {folder}")  # fmt: skip
    await remote.run(conn, "find", folder, "-maxdepth", "1", "-type", "f", "-name", f".*{TEMP_MARK}*", "-delete",
                     what=f"removing temporaries in {folder}")  # fmt: skip


async def put_atomically(
    sftp: asyncssh.SFTPClient, data: bytes, temp: str, final: str, *, gid: int, mode: int, uid: int = ROOT_UID
) -> None:
    """`data` at `final` with this owner and mode, through `temp`; `final` is never seen half-written.

    `fsync` and `posix_rename` are OpenSSH's SFTP extensions fsync@openssh.com and posix-rename@openssh.com
    (its PROTOCOL file), which its sftp-server offers: a plain SFTP rename refuses to replace an existing file.
    """
    try:
        async with sftp.open(temp, "wb", attrs=asyncssh.SFTPAttrs(permissions=TEMP_MODE)) as file:
            await file.write(data)
            await file.fsync()
        await sftp.chown(temp, uid, gid)
        await sftp.chmod(temp, mode)
        await sftp.posix_rename(temp, final)
    except (OSError, asyncssh.Error) as exc:
        await _remove_quietly(sftp, temp)
        raise DeployError(f"writing {final} was interrupted ({exc}); the file there is unchanged") from None


async def _remove_quietly(sftp: asyncssh.SFTPClient, path: str) -> None:
    try:
        await sftp.remove(path)
    except (OSError, asyncssh.Error):
        pass  # the connection is gone: the next sync removes it
