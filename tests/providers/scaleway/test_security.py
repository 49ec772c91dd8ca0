"""Who may reach a Scaleway worker (providers/scaleway/network.py), end to end against the fake Scaleway API:
the workers' security group, the refusal of an unprotected worker, the Private Network, the sweep methods."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fake_scaleway import FakeScaleway, run_fake_scaleway
from scaleway_bodies import GPU_IMAGE_ID

from inventiv.settings import Settings
from providers.base import Firewall, InvalidRequest, Server, ServerSpec, ServerState, TransientError
from providers.mock.cloud import MockCloud
from providers.registry import create_provider
from providers.scaleway.network import rules_differ
from providers.scaleway.provider import ScalewayProvider

ZONE = "fr-par-2"
OTHER_ZONE = "fr-par-1"
TAGS = ("inventiv", "instance=11111111-2222-3333-4444-555555555555")
ALLOWED = "203.0.113.0/24"
ADMIN = "198.51.100.7/32"
NETWORK = "0d3a9c62-5a0e-4d43-9b8b-6f3f4fbc0e11"

Make = Callable[..., Awaitable[ScalewayProvider]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeScaleway]:
    async with run_fake_scaleway(polls_to_running=1, polls_to_gone=0) as running:
        yield running


@pytest.fixture
async def make(fake: FakeScaleway) -> AsyncIterator[Make]:
    """A provider object per call (each a scheduler start), from the fake's settings with `changes`."""
    made: list[ScalewayProvider] = []

    async def build(**changes: Any) -> ScalewayProvider:
        settings = Settings().replace(**{**fake.settings_changes(), "scw_worker_allowed_cidrs": ALLOWED, **changes})
        provider = create_provider("scaleway", settings)
        assert isinstance(provider, ScalewayProvider)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.close()


def spec(name: str = "inventiv-1", zone: str = ZONE) -> ServerSpec:
    return ServerSpec(name=name, zone=zone, commercial_type="L40S-1-48G", tags=TAGS, image=GPU_IMAGE_ID)


async def running(provider: ScalewayProvider, server_id: str) -> Server:
    await provider.power_on(ZONE, server_id)
    for _ in range(10):
        server = await provider.get_server(ZONE, server_id)
        assert server is not None
        if server.state is ServerState.RUNNING:
            return server
    raise AssertionError(f"server {server_id} never ran")


def groups(fake: FakeScaleway, zone: str = ZONE) -> list[dict[str, Any]]:
    """The workers' groups (not the project's default group) in a zone."""
    return [g for g in fake.security_groups.values() if g["zone"] == zone and not g["project_default"]]


def editable_rules(fake: FakeScaleway, group_id: str) -> list[tuple[str, int | None, str]]:
    return [(r["ip_range"], r["dest_port_from"], r["action"])
            for r in fake.security_group_rules[group_id] if r["editable"]]  # fmt: skip


def calls(fake: FakeScaleway, method: str, path_end: str) -> int:
    return sum(1 for m, p in fake.requests if m == method and p.endswith(path_end))


# -- the security group --------------------------------------------------------------------------------


async def test_one_group_per_zone_with_exactly_the_allowed_rules(fake: FakeScaleway, make: Make) -> None:
    provider = await make(scw_worker_allowed_cidrs=f"{ALLOWED}, 2001:db8::/48")

    made = await asyncio.gather(*(provider.create_server(spec(f"s{i}")) for i in range(3)))
    other = await provider.create_server(spec("elsewhere", OTHER_ZONE))

    [group] = groups(fake)
    [other_group] = groups(fake, OTHER_ZONE)
    assert (group["name"], group["tags"], group["project"]) == ("inventiv-workers", ["inventiv", "role=workers"],
                                                                 fake.project_id)  # fmt: skip
    policies = (group["inbound_default_policy"], group["outbound_default_policy"], group["stateful"])
    assert policies == ("drop", "accept", True)
    assert editable_rules(fake, group["id"]) == [(ALLOWED, 8000, "accept"), ("2001:db8::/48", 8000, "accept")]
    # The platform's own SMTP rules are left as they are.
    assert sum(1 for r in fake.security_group_rules[group["id"]] if not r["editable"]) == 6
    assert {fake.servers[s.id]["security_group"]["id"] for s in made} == {group["id"]}
    assert fake.servers[other.id]["security_group"]["id"] == other_group["id"]
    assert calls(fake, "POST", "/security_groups") == 2, "created once per zone, the id cached after"
    assert calls(fake, "PUT", "/rules") == 2


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_failed_group_create_never_makes_two(fake: FakeScaleway, make: Make, when: str) -> None:
    provider = await make()
    fake.fault_methods, fake.fault_paths, fake.faults_left = ("POST",), ("/security_groups",), 1
    if when == "before":
        fake.error_rate = 1.0
    else:
        fake.error_after_rate = 1.0  # made, its reply lost: listing again finds it

    server = await provider.create_server(spec())

    assert len(fake.created_security_groups) == 1 and fake.injected_errors == 1
    [group] = groups(fake)
    assert fake.servers[server.id]["security_group"]["id"] == group["id"]
    assert editable_rules(fake, group["id"]) == [(ALLOWED, 8000, "accept")]
    assert calls(fake, "POST", "/security_groups") == (2 if when == "before" else 1)


async def test_a_restarted_scheduler_adopts_the_group(fake: FakeScaleway, make: Make) -> None:
    first = await (await make()).create_server(spec("a"))
    puts = calls(fake, "PUT", "/rules")

    second = await (await make()).create_server(spec("b"))

    [group] = groups(fake)
    assert {fake.servers[s.id]["security_group"]["id"] for s in (first, second)} == {group["id"]}
    assert len(fake.created_security_groups) == 1
    assert calls(fake, "PUT", "/rules") == puts, "rules already right: not replaced"


async def test_a_changed_setting_reconciles_the_rules_and_the_policies(fake: FakeScaleway, make: Make) -> None:
    server = await (await make()).create_server(spec("a"))
    [group] = groups(fake)
    group["inbound_default_policy"] = "accept"  # changed by hand in the console
    fake.security_group_rules[group["id"]].append(
        {**fake.security_group_rules[group["id"]][-1], "id": "x", "editable": True, "direction": "inbound",
         "action": "accept", "ip_range": "0.0.0.0/0", "dest_port_from": None, "position": 2})  # fmt: skip

    await (await make(scw_worker_allowed_cidrs="192.0.2.0/28", scw_ssh_allowed_cidrs=ADMIN)).create_server(spec("b"))

    assert groups(fake) == [group] and group["inbound_default_policy"] == "drop"
    assert editable_rules(fake, group["id"]) == [("192.0.2.0/28", 8000, "accept"), ("198.51.100.7", 22, "accept")]
    await running(await make(), server.id)
    assert fake.reachable(server.id, "192.0.2.5", 8000) and not fake.reachable(server.id, "203.0.113.9", 8000)
    assert fake.reachable(server.id, "198.51.100.7", 22) and not fake.reachable(server.id, "192.0.2.5", 22)


async def test_the_worker_port_is_open_to_the_allowed_networks_only(fake: FakeScaleway, make: Make) -> None:
    provider = await make()
    server = await running(provider, (await provider.create_server(spec())).id)

    assert server.ip_address == fake.public_ip
    assert fake.reachable(server.id, "203.0.113.9", 8000)
    assert not fake.reachable(server.id, "198.51.100.1", 8000), "another network"
    assert not fake.reachable(server.id, "203.0.113.9", 8001), "another port"
    assert not fake.reachable(server.id, "203.0.113.9", 8000, "UDP"), "another protocol"
    assert not fake.reachable(server.id, "203.0.113.9", 22), "SSH closed unless configured"
    assert fake.reachable(server.id, "198.51.100.1", 443, established=True), "stateful: replies come back in"


async def test_without_a_group_a_server_is_open_to_everyone(fake: FakeScaleway) -> None:
    # What the provider prevents: Scaleway's default group accepts every inbound packet.
    async with aiohttp.ClientSession(fake.url, headers={"X-Auth-Token": fake.secret_key}) as http:
        body = {"name": "bare", "commercial_type": "L4-1-24G", "image": GPU_IMAGE_ID, "project": fake.project_id}
        async with http.post(f"/instance/v1/zones/{ZONE}/servers", json=body) as resp:
            server_id = (await resp.json())["server"]["id"]
        async with http.post(f"/instance/v1/zones/{ZONE}/servers/{server_id}/action", json={"action": "poweron"}):
            pass
    fake.get_server(ZONE, server_id)
    fake.get_server(ZONE, server_id)
    assert fake.servers[server_id]["security_group"]["name"] == "Default security group"
    assert fake.reachable(server_id, "192.0.2.1", 8000) and fake.reachable(server_id, "192.0.2.1", 22)


async def test_an_unprotected_public_worker_is_refused_before_any_call(fake: FakeScaleway, make: Make) -> None:
    provider = await make(scw_worker_allowed_cidrs=None, scw_ssh_allowed_cidrs=ADMIN)

    with pytest.raises(InvalidRequest, match="INVENTIV_SCW_WORKER_ALLOWED_CIDRS") as caught:
        await provider.create_server(spec())

    assert caught.value.code == "SCW_WORKER_CIDRS_REQUIRED"
    assert "INVENTIV_SCW_PRIVATE_NETWORK_ID" in caught.value.message
    assert fake.requests == [] and fake.servers == {}


@pytest.mark.parametrize("cidrs", ["0.0.0.0/0", "10.0.0.0/8,::/0", "10.0.0.1/8", "my-laptop"])
async def test_settings_that_would_open_the_world_build_no_provider(fake: FakeScaleway, cidrs: str) -> None:
    settings = Settings().replace(**{**fake.settings_changes(), "scw_worker_allowed_cidrs": cidrs})
    with pytest.raises(InvalidRequest, match="INVENTIV_SCW_WORKER_ALLOWED_CIDRS") as caught:
        create_provider("scaleway", settings)
    assert caught.value.code == "PROVIDER_NOT_CONFIGURED"


async def test_a_group_deleted_behind_the_schedulers_back_is_made_again(fake: FakeScaleway, make: Make) -> None:
    provider = await make()
    first = await provider.create_server(spec("a"))
    await provider.terminate_server(ZONE, first.id)  # stopped: deleted at once
    [group] = groups(fake)
    fake.delete_security_group(ZONE, group["id"])  # another process swept it

    with pytest.raises(TransientError, match="is gone"):
        await provider.create_server(spec("b"))
    server = await provider.create_server(spec("b"))  # the scheduler's retry

    [again] = groups(fake)
    assert again["id"] != group["id"] and fake.servers[server.id]["security_group"]["id"] == again["id"]


def test_rules_compare_as_the_api_writes_them() -> None:
    policy_rules = [{"action": "accept", "protocol": "TCP", "direction": "inbound", "ip_range": "203.0.113.7/32",
                     "dest_port_from": 8000, "dest_port_to": None, "position": 1, "editable": True}]  # fmt: skip
    as_answered = [{**policy_rules[0], "ip_range": "203.0.113.7", "dest_port_to": 8000, "position": 7}]
    platform = [{**policy_rules[0], "direction": "outbound", "dest_port_from": 25, "editable": False}]
    assert not rules_differ(platform + as_answered, policy_rules)
    assert rules_differ(platform, policy_rules)
    assert rules_differ([*as_answered, {**as_answered[0], "dest_port_from": 22}], policy_rules)


# -- the Private Network -------------------------------------------------------------------------------


async def test_a_private_network_worker_has_no_public_ip_and_is_reached_privately(
    fake: FakeScaleway, make: Make
) -> None:
    provider = await make(scw_worker_allowed_cidrs=None, scw_private_network_id=NETWORK)

    created = await provider.create_server(spec())
    body = fake.servers[created.id]
    assert body["dynamic_ip_required"] is False and body["private_nics"] == []
    [group] = groups(fake)
    assert body["security_group"]["id"] == group["id"] and editable_rules(fake, group["id"]) == []

    server = await running(provider, created.id)

    subnet = fake.private_networks[NETWORK]
    assert server.ip_address == str(subnet[2]) and body["public_ips"] == []
    [nic] = body["private_nics"]
    assert (nic["private_network_id"], nic["state"]) == (NETWORK, "available")
    assert fake.reachable(server.id, str(subnet[9]), 8000), "open to the Private Network's members"
    assert not fake.reachable(server.id, "127.0.0.1", 8000) and not fake.reachable(server.id, "203.0.113.9", 8000)
    for _ in range(3):
        assert (await provider.get_server(ZONE, server.id)).ip_address == server.ip_address  # type: ignore[union-attr]
    assert calls(fake, "GET", "/ips") == 1, "IPAM asked once per NIC"


async def test_a_server_joins_the_network_once_whoever_powers_it_on(fake: FakeScaleway, make: Make) -> None:
    settings = {"scw_private_network_id": NETWORK}
    provider = await make(**settings)
    server = await provider.create_server(spec())
    # Its first NIC is made, the reply lost: reading the server's NICs again adopts it.
    fake.fault_methods, fake.fault_paths, fake.faults_left = ("POST",), ("/private_nics",), 1
    fake.error_after_rate = 1.0
    await provider.power_on(ZONE, server.id)
    await provider.power_on(ZONE, server.id)  # the scheduler repeats the step
    restarted = await make(**settings)
    await restarted.power_on(ZONE, server.id)  # a restarted scheduler adopts it and powers it on again

    assert len(fake.servers[server.id]["private_nics"]) == 1 and fake.injected_errors == 1
    assert calls(fake, "POST", "/private_nics") == 1
    on_network = await restarted.get_server(ZONE, server.id)
    assert on_network is not None and on_network.ip_address == str(fake.private_networks[NETWORK][2])


async def test_the_allowed_networks_also_apply_with_a_private_network(fake: FakeScaleway, make: Make) -> None:
    provider = await make(scw_private_network_id=NETWORK)
    server = await running(provider, (await provider.create_server(spec())).id)
    [group] = groups(fake)
    assert editable_rules(fake, group["id"]) == [(ALLOWED, 8000, "accept")]
    assert fake.servers[server.id]["dynamic_ip_required"] is False and server.ip_address is not None


# -- the sweep's methods -------------------------------------------------------------------------------


async def test_firewalls_are_listed_and_deleted_once_unused(fake: FakeScaleway, make: Make) -> None:
    provider = await make()
    server = await provider.create_server(spec())
    [group] = groups(fake)

    [listed] = await provider.list_firewalls(ZONE, ["inventiv"])
    assert isinstance(listed, Firewall)
    assert (listed.id, listed.name, listed.zone, listed.server_ids) == (group["id"], "inventiv-workers", ZONE,
                                                                         (server.id,))  # fmt: skip
    assert listed.tags == ("inventiv", "role=workers") and listed.created_at is not None
    assert await provider.list_firewalls(ZONE, ["someone-else"]) == []
    with pytest.raises(TransientError, match="used by 1 server"):
        await provider.delete_firewall(ZONE, group["id"])
    assert calls(fake, "DELETE", f"/security_groups/{group['id']}") == 0, "refused before asking"

    await provider.terminate_server(ZONE, server.id)
    await provider.delete_firewall(ZONE, group["id"])
    await provider.delete_firewall(ZONE, group["id"])  # gone: done

    assert await provider.list_firewalls(ZONE, ["inventiv"]) == [] and groups(fake) == []
    # The provider forgot it: its next worker gets a new group rather than a deleted one.
    again = await provider.create_server(spec("b"))
    assert fake.servers[again.id]["security_group"]["id"] == groups(fake)[0]["id"]


async def test_firewalls_are_listed_across_pages(fake: FakeScaleway, make: Make) -> None:
    for i in range(105):
        fake.create_security_group(ZONE, {"name": f"g{i}", "project": fake.project_id, "tags": ["inventiv"]})
    fake.create_security_group(ZONE, {"name": "theirs", "project": fake.project_id, "tags": ["other"]})
    provider = await make()
    assert len(await provider.list_firewalls(ZONE, ["inventiv"])) == 105
    assert calls(fake, "GET", "/security_groups") == 2


async def test_clouds_without_firewalls_have_none_to_sweep(tmp_path: Path) -> None:
    cloud = MockCloud(tmp_path)
    try:
        assert await cloud.list_firewalls(ZONE, ["inventiv"]) == []
        await cloud.delete_firewall(ZONE, str(uuid.uuid4()))
    finally:
        await cloud.close()


# -- the fake ------------------------------------------------------------------------------------------


async def test_the_fake_refuses_to_delete_a_group_in_use(fake: FakeScaleway, make: Make) -> None:
    await (await make()).create_server(spec())
    [group] = groups(fake)
    async with aiohttp.ClientSession(fake.url, headers={"X-Auth-Token": fake.secret_key}) as http:
        path = f"/instance/v1/zones/{ZONE}/security_groups/{group['id']}"
        async with http.delete(path) as resp:
            refusal = {"type": "conflict", "message": "Group is in use. You cannot delete it."}
            assert (resp.status, await resp.json()) == (409, refusal)
        async with http.get(path) as resp:
            assert [s["name"] for s in (await resp.json())["security_group"]["servers"]] == ["inventiv-1"]
