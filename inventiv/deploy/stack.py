"""`up`: the Compose files onto the VM, `docker compose pull` and `up -d` there, then HTTPS health.

The files of deploy/ (docker-compose.yml, docker-compose.vm.yml, Caddyfile) are written into DEPLOY_DIR the
way secrets are (whole or not at all), `.env` there is linked to the synced COMPOSE_ENV_SECRET, and Compose
runs with DOMAIN, DEPLOY_IMAGE and SECRETS_DIR in its environment. Then `/healthz` and `/readyz` of
HEALTH_URL (https://DOMAIN: through Caddy, so the certificate is checked too) must answer 200.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shlex
import time
from pathlib import Path, PurePosixPath

import aiohttp
import asyncssh

from inventiv.deploy import remote
from inventiv.deploy.errors import DeployError
from inventiv.deploy.secrets_sync import ROOT_UID, TEMP_MARK, put_atomically
from inventiv.deploy.vm_settings import VmSettings

log = logging.getLogger(__name__)

DEPLOY_SOURCE = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.vm.yml")
STACK_FILES = (*COMPOSE_FILES, "Caddyfile")
# Readable by root only: the Compose files name the secrets folder and the image, nothing secret, but nobody
# else on the VM has a reason to read them.
STACK_FILE_MODE = 0o600
HEALTH_PATHS = ("/healthz", "/readyz")
# Between two looks at the health routes; each look is bounded so a hung connection cannot eat the budget.
HEALTH_POLL_S = 2.0
HEALTH_REQUEST_TIMEOUT_S = 5.0
# Waits for the first boot's cloud-init (Docker installed) when the VM has it.
WAIT_FOR_BOOT = "if command -v cloud-init >/dev/null 2>&1; then cloud-init status --wait >/dev/null; fi"


def compose_command(settings: VmSettings, *args: str) -> str:
    """`docker compose` in DEPLOY_DIR with both files and the VM's variables, as one shell line."""
    variables = {"DOMAIN": settings.domain, "DEPLOY_IMAGE": settings.image, "SECRETS_DIR": settings.secrets_dir}
    words = ["env", *(f"{k}={v}" for k, v in variables.items()), "docker", "compose"]
    for name in COMPOSE_FILES:
        words += ["-f", name]
    return f"cd {shlex.quote(settings.deploy_dir)} && {shlex.join([*words, *args])}"


async def up(conn: asyncssh.SSHClientConnection, settings: VmSettings, source: Path = DEPLOY_SOURCE) -> None:
    await remote.run_shell(conn, WAIT_FOR_BOOT, what="waiting for the first boot")
    await upload_stack(conn, settings, source)
    env_secret = settings.remote_secret(settings.compose_env_secret)
    link = str(PurePosixPath(settings.deploy_dir) / ".env")
    await remote.run(conn, "test", "-f", env_secret, what=f"{env_secret} (run `inventiv deploy secrets sync` first)")
    await remote.run(conn, "ln", "-sfn", env_secret, link, what=f"linking {link}")
    await remote.run_shell(conn, compose_command(settings, "pull"), what="docker compose pull")
    await remote.run_shell(conn, compose_command(settings, "up", "-d", "--no-build", "--remove-orphans"),
                           what="docker compose up")  # fmt: skip


async def upload_stack(conn: asyncssh.SSHClientConnection, settings: VmSettings, source: Path) -> None:
    folder = PurePosixPath(settings.deploy_dir)
    await remote.run(conn, "install", "-d", "-m", "700", str(folder), what=f"creating {folder}")
    token = secrets.token_hex(8)
    async with conn.start_sftp_client() as sftp:
        for name in STACK_FILES:
            data = (source / name).read_bytes()
            await put_atomically(sftp, data, str(folder / f".{name}{TEMP_MARK}{token}"), str(folder / name),
                                 gid=ROOT_UID, mode=STACK_FILE_MODE)  # fmt: skip


async def wait_healthy(settings: VmSettings, *, poll_s: float = HEALTH_POLL_S) -> None:
    """Returns once every health route answers 200; DeployError with the last answers after HEALTH_TIMEOUT_S."""
    deadline = time.monotonic() + settings.health_timeout_s
    timeout = aiohttp.ClientTimeout(total=HEALTH_REQUEST_TIMEOUT_S)
    last: dict[str, str] = {}
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            for path in HEALTH_PATHS:
                last[path] = await _status(session, settings.health_base_url + path)
            if all(status == "200" for status in last.values()):
                return
            if time.monotonic() >= deadline:
                answers = ", ".join(f"{path}: {status}" for path, status in last.items())
                raise DeployError(f"{settings.health_base_url} is not healthy after {settings.health_timeout_s:g} s "
                                  f"({answers})")  # fmt: skip
            await asyncio.sleep(poll_s)


async def _status(session: aiohttp.ClientSession, url: str) -> str:
    try:
        async with session.get(url) as resp:
            return str(resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__
