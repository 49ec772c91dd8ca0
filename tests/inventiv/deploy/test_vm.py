"""`provision` against the fake Scaleway: create with the root size, adopt, grow sbs and local roots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from deploy_env import LOCAL_TYPE, fake_client, fake_values, settings_for
from fake_scaleway import FakeScaleway, run_fake_scaleway

from inventiv.deploy import vm
from inventiv.deploy.errors import DeployError
from inventiv.deploy.user_data import vm_cloud_config
from providers.scaleway.client import ScalewayClient

GB = 10**9


@pytest.fixture
async def fake() -> AsyncIterator[FakeScaleway]:
    async with run_fake_scaleway(polls_to_running=1) as fake:
        yield fake


@pytest.fixture
async def client(fake: FakeScaleway) -> AsyncIterator[ScalewayClient]:
    client = fake_client(fake)
    yield client
    await client.close()


def _requests(fake: FakeScaleway, method: str, fragment: str) -> list[str]:
    return [path for m, path in fake.requests if m == method and fragment in path]


def _root(fake: FakeScaleway, server: dict[str, Any]) -> dict[str, Any]:
    root_id = fake.servers[server["id"]]["volumes"]["0"]["id"]
    return fake.volumes.get(root_id) or fake.local_volumes[root_id]


async def test_creates_the_server_with_the_root_size(
    fake: FakeScaleway, client: ScalewayClient, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, **fake_values(fake), SCW_ROOT_VOLUME_SIZE_GB=40)
    server = await vm.provision(client, settings)
    assert server["state"] == "running" and vm.public_address(server) == "127.0.0.1"
    body = fake.servers[server["id"]]
    assert (body["name"], body["tags"]) == ("inventiv-control-plane-prod", ["inventiv-control-plane", "env=prod"])
    root = _root(fake, server)
    assert root["size"] == 40 * GB
    # The root carries the env's tags, so a destroy finds it even if the server is gone.
    assert set(root["tags"]) == {"inventiv-control-plane", "env=prod"}
    # The user data was there before the first power-on.
    assert fake.first_boot_cloud_init[server["id"]] == vm_cloud_config(settings)
    group = fake.security_groups[body["security_group"]["id"]]
    assert group["name"] == "inventiv-control-plane-prod" and group["inbound_default_policy"] == "drop"
    for port, source, opened in ((443, "192.0.2.1", True), (80, "2001:db8::1", True), (22, "198.51.100.9", True),
                                 (22, "192.0.2.1", False), (8003, "198.51.100.9", False)):  # fmt: skip
        assert fake.reachable(server["id"], source, port) is opened, (port, source)


async def test_creates_a_local_root_when_asked(fake: FakeScaleway, client: ScalewayClient, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, **fake_values(fake), SCW_COMMERCIAL_TYPE=LOCAL_TYPE,
                            SCW_ROOT_VOLUME_TYPE="l_ssd", SCW_ROOT_VOLUME_SIZE_GB=30)  # fmt: skip
    server = await vm.provision(client, settings)
    root = _root(fake, server)
    assert (root["volume_type"], root["size"]) == ("l_ssd", 30 * GB)


async def test_a_second_provision_adopts_and_changes_nothing(
    fake: FakeScaleway, client: ScalewayClient, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, **fake_values(fake))
    first = await vm.provision(client, settings)
    fake.requests.clear()
    second = await vm.provision(client, settings)
    assert second["id"] == first["id"]
    assert len(fake.created_servers) == 1 and len(fake.created_security_groups) == 1
    assert [m for m, _ in fake.requests if m != "GET"] == []


async def test_another_env_is_not_adopted(fake: FakeScaleway, client: ScalewayClient, tmp_path: Path) -> None:
    prod = await vm.provision(client, settings_for(tmp_path / "p", **fake_values(fake)))
    staging = await vm.provision(client, settings_for(tmp_path / "s", "staging", **fake_values(fake)))
    assert prod["id"] != staging["id"]
    assert fake.servers[staging["id"]]["security_group"]["id"] != fake.servers[prod["id"]]["security_group"]["id"]


async def test_grows_a_small_sbs_root_online(fake: FakeScaleway, client: ScalewayClient, tmp_path: Path) -> None:
    server = await vm.provision(client, settings_for(tmp_path, **fake_values(fake), SCW_ROOT_VOLUME_SIZE_GB=10))
    fake.requests.clear()
    bigger = await vm.provision(client, settings_for(tmp_path, **fake_values(fake), SCW_ROOT_VOLUME_SIZE_GB=40))
    root = _root(fake, server)
    assert bigger["id"] == server["id"] and root["size"] == 40 * GB
    assert _requests(fake, "PATCH", f"/block/v1alpha1/zones/fr-par-1/volumes/{root['id']}")
    # Online: the server was never stopped.
    assert _requests(fake, "POST", "/action") == [] and fake.servers[server["id"]]["state"] == "running"


async def test_grows_a_small_local_root_with_the_server_stopped(
    fake: FakeScaleway, client: ScalewayClient, tmp_path: Path
) -> None:
    local = {**fake_values(fake), "SCW_COMMERCIAL_TYPE": LOCAL_TYPE, "SCW_ROOT_VOLUME_TYPE": "l_ssd"}
    server = await vm.provision(client, settings_for(tmp_path, **local, SCW_ROOT_VOLUME_SIZE_GB=20))
    fake.requests.clear()
    bigger = await vm.provision(client, settings_for(tmp_path, **local, SCW_ROOT_VOLUME_SIZE_GB=40))
    root = _root(fake, server)
    assert root["size"] == 40 * GB and bigger["state"] == "running"
    writes = [(m, p.rsplit("/", 1)[-1]) for m, p in fake.requests if m != "GET"]
    # The fake refuses a local resize unless the server is stopped: the order is the proof.
    assert writes == [("POST", "action"), ("PATCH", root["id"]), ("POST", "action")]


async def test_the_kind_comes_from_the_volume_not_the_setting(
    fake: FakeScaleway, client: ScalewayClient, tmp_path: Path
) -> None:
    local = {**fake_values(fake), "SCW_COMMERCIAL_TYPE": LOCAL_TYPE, "SCW_ROOT_VOLUME_TYPE": "l_ssd"}
    server = await vm.provision(client, settings_for(tmp_path, **local, SCW_ROOT_VOLUME_SIZE_GB=20))
    # The env file now says sbs_volume, but the existing root is local: the Instance API grows it.
    await vm.provision(client, settings_for(tmp_path, **{**local, "SCW_ROOT_VOLUME_TYPE": "sbs_volume"},
                                            SCW_ROOT_VOLUME_SIZE_GB=30))  # fmt: skip
    assert _root(fake, server)["size"] == 30 * GB
    assert not _requests(fake, "PATCH", "/block/")


async def test_two_servers_of_one_env_are_refused(fake: FakeScaleway, client: ScalewayClient, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, **fake_values(fake))
    await vm.provision(client, settings)
    group_id = next(iter(fake.security_groups))
    fake.create_server("fr-par-1", {**vm.server_request(settings, group_id), "image": "ubuntu_noble"})
    with pytest.raises(DeployError, match=r"several servers named inventiv-control-plane-prod"):
        await vm.provision(client, settings)


async def test_a_refused_local_resize_starts_the_server_again(
    fake: FakeScaleway, client: ScalewayClient, tmp_path: Path
) -> None:
    local = {**fake_values(fake), "SCW_COMMERCIAL_TYPE": LOCAL_TYPE, "SCW_ROOT_VOLUME_TYPE": "l_ssd"}
    server = await vm.provision(client, settings_for(tmp_path, **local, SCW_ROOT_VOLUME_SIZE_GB=20))
    root_id = fake.servers[server["id"]]["volumes"]["0"]["id"]
    fake.refuse_local_resize = True
    with pytest.raises(DeployError, match=rf"Scaleway refused to grow local root volume {root_id} to 40000000000"):
        await vm.provision(client, settings_for(tmp_path, **local, SCW_ROOT_VOLUME_SIZE_GB=40))
    assert fake.servers[server["id"]]["state"] == "running" and fake.local_volumes[root_id]["size"] == 20 * GB
