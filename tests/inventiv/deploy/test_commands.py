"""`inventiv deploy ...` as an operator runs it: a real process against the fake Scaleway and, for rebuild,
an in-process SSH server standing for the VM."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from deploy_env import World, fake_values, run_world, settings_for, write_env
from fake_scaleway import FakeScaleway, run_fake_scaleway

from inventiv.deploy import commands
from inventiv.deploy.errors import DeployError

ROOT = Path(__file__).resolve().parents[3]


async def inventiv(cwd: Path, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """`inventiv ARGS` in a child process, without blocking this loop (the fakes answer from it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCW_", "INVENTIV_"))}
    env["PYTHONPATH"] = str(ROOT)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inventiv", *args, cwd=cwd, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(child.communicate(stdin.encode()), timeout=120)
    return child.returncode or 0, stdout.decode(), stderr.decode()


@pytest.fixture
async def fake() -> AsyncIterator[FakeScaleway]:
    async with run_fake_scaleway(polls_to_running=0) as fake:
        yield fake


@pytest.mark.parametrize(
    ("values", "env", "message"),
    [
        ({}, "production", "unknown env 'production': one of staging, prod"),
        ({"SECRET_FILES": "secrets/inventiv.env"}, "prod", "SECRET_FILES: "),
        ({"SCW_ROOT_VOLUME_SIZE_GB": 5}, "prod", "SCW_ROOT_VOLUME_SIZE_GB=5 is below the image's 10 GB root"),
    ],
)
async def test_bad_input_fails_before_any_cloud_call(
    fake: FakeScaleway, tmp_path: Path, values: dict[str, object], env: str, message: str
) -> None:
    env_file = write_env(tmp_path, **fake_values(fake), **values)
    status, _, stderr = await inventiv(tmp_path, "--env-file", str(env_file), "deploy", "provision", "--env", env)
    assert status == 2 and stderr.startswith("inventiv: error: ") and message in stderr, stderr
    assert fake.requests == []


async def test_provision_reads_deploy_env_of_the_env(fake: FakeScaleway, tmp_path: Path) -> None:
    write_env(tmp_path, "staging", **fake_values(fake), SCW_ROOT_VOLUME_SIZE_GB=40)
    # A local .env saying otherwise is not read.
    (tmp_path / ".env").write_text("SCW_ROOT_VOLUME_SIZE_GB=10\nSCW_SECRET_KEY=wrong\n")
    status, stdout, stderr = await inventiv(tmp_path, "deploy", "provision", "--env", "staging")
    assert status == 0, stderr
    (server,) = fake.servers.values()
    assert server["name"] == "inventiv-control-plane-staging" and f"server {server['id']} running" in stdout
    assert fake.volumes[server["volumes"]["0"]["id"]]["size"] == 40 * 10**9


async def test_destroy_asks_for_the_env_name(fake: FakeScaleway, tmp_path: Path) -> None:
    write_env(tmp_path, **fake_values(fake))
    assert (await inventiv(tmp_path, "deploy", "provision", "--env", "prod"))[0] == 0
    status, _, stderr = await inventiv(tmp_path, "deploy", "destroy", "--env", "prod", stdin="staging\n")
    assert status == 2 and "not confirmed: 'staging' is not 'prod'; nothing was deleted" in stderr
    assert len(fake.servers) == 1
    status, stdout, stderr = await inventiv(tmp_path, "deploy", "destroy", "--env", "prod", stdin="prod\n")
    assert status == 0, stderr
    assert "prod: destroyed" in stdout and (fake.servers, fake.volumes) == ({}, {})


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with run_world(tmp_path) as world:
        for name in ("docker", "cloud-init"):
            script = world.ssh.bin_dir / name
            script.write_text(f'#!/bin/sh\necho "$*" >> {world.ssh.bin_dir}/{name}.log\n')
            script.chmod(0o755)
        yield world


@pytest.fixture
async def healthy() -> AsyncIterator[str]:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", ok)
    app.router.add_get("/readyz", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield "http://{}:{}".format(*runner.addresses[0][:2])
    await runner.cleanup()


async def test_rebuild_replaces_the_vm_and_ends_healthy(world: World, healthy: str) -> None:
    world.fake.ssh_host_fingerprints = world.ssh.fingerprints
    env_file = write_env(world.tmp, **world.values(), HEALTH_URL=healthy)
    old = world.server_id
    status, stdout, stderr = await inventiv(world.tmp, "--env-file", str(env_file), "deploy", "rebuild",
                                            "--env", "prod", "--yes")  # fmt: skip
    assert status == 0, stderr
    (server_id,) = world.fake.servers
    assert server_id != old and old not in world.fake.servers
    assert {p.name for p in world.secrets_dir.iterdir()} == {"inventiv.env", "scw_secret_key", "worker_secret_key"}
    pull, start = (world.ssh.bin_dir / "docker.log").read_text().splitlines()
    assert pull.endswith("docker-compose.vm.yml pull") and start.endswith("up -d --no-build --remove-orphans")
    assert f"{healthy} is healthy" in stdout


def test_no_answer_is_no_confirmation(tmp_path: Path) -> None:
    def closed_stdin(_: str) -> str:
        raise EOFError

    with pytest.raises(DeployError, match=r"not confirmed: '' is not 'prod'; nothing was deleted"):
        commands.confirm(settings_for(tmp_path), closed_stdin)
