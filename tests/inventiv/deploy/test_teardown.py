"""What destroy removes, and how, by the server's state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from deploy_env import LOCAL_TYPE, fake_client, fake_values, settings_for
from fake_scaleway import FakeScaleway, run_fake_scaleway

from inventiv.deploy import teardown, vm
from inventiv.deploy.errors import DeployError
from inventiv.deploy.teardown import Removal, ServerTeardown, plan_server, volumes_of_env
from providers.scaleway.client import ScalewayClient


def _server(state: str) -> dict[str, Any]:
    return {"id": "s", "state": state, "volumes": {
        "0": {"id": "root", "volume_type": "sbs_volume"}, "1": {"id": "scratch", "volume_type": "l_ssd"}}}  # fmt: skip


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        # Terminate deletes the local volume itself and only detaches the Block one.
        ("running", ServerTeardown("s", Removal.TERMINATE, ("root",), ())),
        # DELETE of a stopped server leaves every volume.
        ("stopped", ServerTeardown("s", Removal.DELETE, ("root",), ("scratch",))),
        ("starting", ServerTeardown("s", Removal.WAIT, ("root",), ("scratch",))),
        ("stopping", ServerTeardown("s", Removal.WAIT, ("root",), ("scratch",))),
    ],
)
def test_plan_server(state: str, expected: ServerTeardown) -> None:
    assert plan_server(_server(state)) == expected


def test_volumes_of_env_need_every_tag() -> None:
    volumes = [
        {"id": "a", "tags": ["inventiv-control-plane", "env=prod"]},
        {"id": "b", "tags": ["inventiv-control-plane", "env=staging"]},
        {"id": "c", "tags": ["env=prod"]},
        {"id": "d", "tags": []},
    ]
    assert volumes_of_env(volumes, ("inventiv-control-plane", "env=prod")) == ["a"]


# -- against the fake Scaleway -----------------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeScaleway]:
    async with run_fake_scaleway(polls_to_running=1, polls_to_gone=2) as fake:
        yield fake


@pytest.fixture
async def client(fake: FakeScaleway) -> AsyncIterator[ScalewayClient]:
    client = fake_client(fake)
    yield client
    await client.close()


def _of_env(fake: FakeScaleway, env: str) -> dict[str, list[str]]:
    tag = f"env={env}"
    return {
        "servers": [i for i, s in fake.servers.items() if tag in s["tags"]],
        "volumes": [i for i, v in fake.volumes.items() if tag in v["tags"]] + list(fake.local_volumes),
        "groups": [i for i, g in fake.security_groups.items() if tag in g["tags"]],
    }


async def test_destroy_leaves_nothing_of_the_env_and_everything_else(
    fake: FakeScaleway, client: ScalewayClient, tmp_path: Path
) -> None:
    staging = await vm.provision(client, settings_for(tmp_path / "s", "staging", **fake_values(fake)))
    prod = settings_for(tmp_path / "p", **fake_values(fake))
    await vm.provision(client, prod)
    await teardown.destroy(client, prod)
    assert _of_env(fake, "prod") == {"servers": [], "volumes": [], "groups": []}
    assert list(fake.servers) == [staging["id"]]
    assert len(fake.volumes) == 1 and len([g for g in fake.security_groups.values() if not g["project_default"]]) == 1
    assert await teardown.leftovers(client, prod, set()) == []


async def test_destroy_a_stopped_server_deletes_the_volumes_it_leaves(
    fake: FakeScaleway, client: ScalewayClient, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, **fake_values(fake), SCW_COMMERCIAL_TYPE=LOCAL_TYPE, SCW_ROOT_VOLUME_TYPE="l_ssd")
    server = await vm.provision(client, settings)
    fake.add_scratch_volume(server["id"])
    await vm.power_off(client, settings.zone, server["id"])
    await teardown.destroy(client, settings)
    assert (fake.servers, fake.local_volumes, fake.volumes) == ({}, {}, {})
    assert ("DELETE", f"/instance/v1/zones/fr-par-1/servers/{server['id']}") in fake.requests


async def test_destroy_finds_a_root_an_interrupted_destroy_left(
    fake: FakeScaleway, client: ScalewayClient, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, **fake_values(fake))
    server = await vm.provision(client, settings)
    root_id = fake.servers[server["id"]]["volumes"]["0"]["id"]
    await client.request("POST", f"/instance/v1/zones/fr-par-1/servers/{server['id']}/action",
                         body={"action": "terminate"})  # fmt: skip
    for _ in range(3):
        fake.list_servers("fr-par-1", {})
    assert server["id"] not in fake.servers and root_id in fake.volumes
    await teardown.destroy(client, settings)
    assert fake.volumes == {} and _of_env(fake, "prod")["groups"] == []


async def test_destroy_reports_what_it_could_not_delete(
    fake: FakeScaleway, client: ScalewayClient, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, **fake_values(fake))
    await vm.provision(client, settings)
    fake.delete_volume = lambda zone, volume_id: None  # type: ignore[method-assign]  # the API says 204, keeps it
    with pytest.raises(DeployError, match=r"prod: still there after destroy: volume "):
        await teardown.destroy(client, settings)
