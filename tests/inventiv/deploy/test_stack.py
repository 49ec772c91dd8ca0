"""`up` over SSH: the Compose files land in DEPLOY_DIR, Compose pulls and starts the stack with the VM's
variables (a stand-in `docker` on the VM's PATH records it), then health is polled over HTTP."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from deploy_env import World, run_world, settings_for

from inventiv.deploy import commands, stack
from inventiv.deploy.errors import DeployError

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with run_world(tmp_path) as world:
        _stand_in(world, "cloud-init", 0)
        _stand_in(world, "docker", 0)
        yield world


def _stand_in(world: World, name: str, status: int) -> None:
    """A script on the VM's PATH that logs its arguments and the Compose variables, then exits `status`."""
    script = world.ssh.bin_dir / name
    log = world.ssh.bin_dir / f"{name}.log"
    script.write_text(f'#!/bin/sh\necho "$PWD|$DOMAIN|$DEPLOY_IMAGE|$SECRETS_DIR|$*" >> {log}\nexit {status}\n')
    script.chmod(0o755)


def _log(world: World, name: str) -> list[str]:
    path = world.ssh.bin_dir / f"{name}.log"
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
async def health() -> AsyncIterator[tuple[str, list[int]]]:
    """A gateway stand-in: /healthz is 200, /readyz answers the statuses queued in the list, then 200."""
    queued: list[int] = []

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(status=queued.pop(0) if queued else 200)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}", queued
    await runner.cleanup()


def test_compose_command(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, DEPLOY_DIR="/opt/inventiv", DOMAIN="api.example.com")
    assert stack.compose_command(settings, "up", "-d") == (
        "cd /opt/inventiv && env DOMAIN=api.example.com DEPLOY_IMAGE=registry.example.com/inventiv:0.1.0 "
        "SECRETS_DIR=/etc/inventiv/secrets docker compose -f docker-compose.yml -f docker-compose.vm.yml up -d"
    )


async def test_up_pulls_and_starts_the_stack_then_checks_health(
    world: World, health: tuple[str, list[int]]
) -> None:
    url, _ = health
    settings = world.settings(HEALTH_URL=url, DOMAIN="api.example.com")
    await commands.sync_secrets(world.client, settings)
    await commands.start(world.client, settings)
    assert len(_log(world, "cloud-init")) == 1
    expected = f"{world.deploy_dir}|api.example.com|registry.example.com/inventiv:0.1.0|{world.secrets_dir}|compose "
    files = "-f docker-compose.yml -f docker-compose.vm.yml"
    assert _log(world, "docker") == [f"{expected}{files} pull", f"{expected}{files} up -d --no-build --remove-orphans"]
    for name in stack.STACK_FILES:
        landed = world.deploy_dir / name
        assert landed.read_bytes() == (DEPLOY / name).read_bytes()
        assert stat.S_IMODE(landed.stat().st_mode) == 0o600
    env_link = world.deploy_dir / ".env"
    assert env_link.is_symlink() and env_link.resolve() == world.secrets_dir / "inventiv.env"


async def test_up_needs_the_synced_compose_env(world: World) -> None:
    with pytest.raises(DeployError, match=r"inventiv.env \(run `inventiv deploy secrets sync` first\) failed"):
        await stack_up(world)
    assert _log(world, "docker") == []


async def stack_up(world: World) -> None:
    async with commands.ssh(world.client, world.settings()) as conn:
        await stack.up(conn, world.settings())


async def test_a_failed_pull_stops_up(world: World) -> None:
    _stand_in(world, "docker", 1)
    await commands.sync_secrets(world.client, world.settings())
    with pytest.raises(DeployError, match=r"docker compose pull failed on the VM \(exit status 1\)"):
        await stack_up(world)
    assert len(_log(world, "docker")) == 1


async def test_health_waits_for_ready(tmp_path: Path, health: tuple[str, list[int]]) -> None:
    url, queued = health
    queued += [503, 503]
    await stack.wait_healthy(settings_for(tmp_path, HEALTH_URL=url), poll_s=0.01)
    assert queued == []


async def test_health_gives_up_with_the_last_answers(tmp_path: Path, health: tuple[str, list[int]]) -> None:
    url, queued = health
    queued += [503] * 1000
    with pytest.raises(DeployError, match=r"is not healthy after 0.2 s \(/healthz: 200, /readyz: 503\)"):
        await stack.wait_healthy(settings_for(tmp_path, HEALTH_URL=url, HEALTH_TIMEOUT_S=0.2), poll_s=0.01)
