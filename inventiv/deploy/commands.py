"""`inventiv deploy ...`: what each command does, step by step (its parser: parser.py).

    provision --env E        the VM (created or adopted), root grown, security group, cloud-init
    secrets sync --env E     SECRET_FILES into SECRETS_DIR over SSH, atomically, then checked
    up --env E               Compose pull + up on the VM, then https://DOMAIN/healthz and /readyz
    destroy --env E [--yes]  server, volumes, IP, security group; then checks nothing is left
    rebuild --env E [--yes]  destroy + provision + secrets sync + up; ends healthy

Settings are read (and every one checked) before the first cloud call.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncssh

from inventiv.deploy import remote, secrets_sync, stack, teardown, vm
from inventiv.deploy.errors import DeployError, SshUnreachable
from inventiv.deploy.vm_settings import VmSettings, load
from providers.base import ProviderError
from providers.scaleway.client import ScalewayClient

Ask = Callable[[str], str]
# A server that was just (re)created answers SSH some seconds after it is `running`: 5 minutes of tries.
SSH_ATTEMPTS = 30
SSH_RETRY_S = 10.0


def run(args: argparse.Namespace, ask: Ask = input) -> int:
    """The command's exit status; an expected failure is one line on stderr and status 2."""
    import uvloop

    try:
        settings = load(args.env, args.env_file)
        settings.require_for(args.deploy_command)
        if args.deploy_command in ("destroy", "rebuild") and not args.yes:
            confirm(settings, ask)
        uvloop.run(dispatch(args.deploy_command, settings))
    except (DeployError, ProviderError) as exc:
        print(f"inventiv: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def confirm(settings: VmSettings, ask: Ask) -> None:
    try:
        answer = ask(f"This deletes the {settings.env} control plane ({settings.name}) and its data. "
                     f"Type {settings.env}: ")  # fmt: skip
    except EOFError:
        answer = ""
    if answer.strip() != settings.env:
        raise DeployError(f"not confirmed: {answer.strip()!r} is not {settings.env!r}; nothing was deleted")


async def dispatch(command: str, settings: VmSettings) -> None:
    async with scaleway(settings) as client:
        if command == "provision":
            await provision(client, settings)
        elif command == "secrets":
            await sync_secrets(client, settings)
        elif command == "up":
            await start(client, settings)
        elif command == "destroy":
            await destroy(client, settings)
        else:
            await destroy(client, settings)
            await provision(client, settings)
            await sync_secrets(client, settings)
            await start(client, settings)


@asynccontextmanager
async def scaleway(settings: VmSettings) -> AsyncIterator[ScalewayClient]:
    client = ScalewayClient(settings.scw_secret_key, settings.scw_api_url)
    try:
        yield client
    finally:
        await client.close()


async def provision(client: ScalewayClient, settings: VmSettings) -> dict[str, Any]:
    server = await vm.provision(client, settings)
    address = vm.public_address(server)
    print(f"{settings.env}: server {server['id']} running at {address}; point {settings.domain} at it")
    return server


@asynccontextmanager
async def ssh(client: ScalewayClient, settings: VmSettings) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """SSH to the env's server, its host key pinned to the fingerprints Scaleway published."""
    server = await vm.the_server(client, settings)
    address = vm.public_address(server)
    if address is None:
        raise DeployError(f"server {server['id']} has no public IP (state {server.get('state')}): run provision")
    fingerprints = await remote.published_fingerprints(client, settings.zone, str(server["id"]))
    for attempt in range(1, SSH_ATTEMPTS + 1):
        try:
            conn = await remote.connect(settings, address, fingerprints)
            break
        except SshUnreachable:
            if attempt == SSH_ATTEMPTS:
                raise
            await client.pause(SSH_RETRY_S)
    try:
        yield conn
    finally:
        conn.close()
        await conn.wait_closed()


async def sync_secrets(client: ScalewayClient, settings: VmSettings) -> None:
    async with ssh(client, settings) as conn:
        paths = await secrets_sync.sync(conn, settings)
    print(f"{settings.env}: {len(paths)} secret(s) in {settings.secrets_dir}, readable by root and group "
          f"{settings.container_gid} only")  # fmt: skip


async def start(client: ScalewayClient, settings: VmSettings) -> None:
    async with ssh(client, settings) as conn:
        await stack.up(conn, settings)
    await stack.wait_healthy(settings)
    print(f"{settings.env}: {settings.health_base_url} is healthy")


async def destroy(client: ScalewayClient, settings: VmSettings) -> None:
    await teardown.destroy(client, settings)
    print(f"{settings.env}: destroyed; no server, volume or security group of {settings.env} is left")
