"""`destroy`: the env's server, its volumes, its IP and its security group, found by the env's tags; nothing
else. It ends by listing again and fails if anything of the env is left.

A running server is terminated: Scaleway deletes its local volumes and its dynamic IP with it but only
detaches its Block volumes, which are deleted next. A stopped one cannot be terminated: `DELETE` removes it
and leaves every volume, deleted the same way (SCALEWAY.md, "Servers"). Block roots carry the env's tags
(vm.py puts them there), so a root left by an interrupted destroy is still found by the next one.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

from inventiv.deploy import firewall
from inventiv.deploy.errors import DeployError
from inventiv.deploy.vm import POLL_S, find_servers, servers_path
from inventiv.deploy.vm_settings import VmSettings
from providers.base import NotFound
from providers.scaleway.client import ScalewayClient

log = logging.getLogger(__name__)

# Terminating takes Scaleway a minute or two; polled every POLL_S.
GONE_POLLS = 150


class Removal(enum.Enum):
    TERMINATE = "terminate"  # running: the action deletes local volumes, detaches Block ones
    DELETE = "delete"  # stopped: DELETE leaves every volume
    WAIT = "wait"  # starting, stopping...: wait until it settles, then decide again


@dataclass(frozen=True, slots=True)
class ServerTeardown:
    server_id: str
    removal: Removal
    block_volumes: tuple[str, ...]
    local_volumes: tuple[str, ...]


def plan_server(server: dict[str, Any]) -> ServerTeardown:
    """How to remove this server, and which of its volumes to delete once it is gone."""
    entries = (server.get("volumes") or {}).values()
    block = tuple(str(e["id"]) for e in entries if e.get("volume_type") == "sbs_volume")
    local = tuple(str(e["id"]) for e in entries if e.get("volume_type") != "sbs_volume")
    state = server.get("state")
    removal = Removal.TERMINATE if state == "running" else Removal.DELETE if state == "stopped" else Removal.WAIT
    # Terminate deletes local volumes itself; after DELETE they are left and are ours to delete.
    return ServerTeardown(str(server["id"]), removal, block, () if removal is Removal.TERMINATE else local)


def volumes_of_env(volumes: list[dict[str, Any]], tags: tuple[str, ...]) -> list[str]:
    """Block volumes carrying every tag of the env (the API's tag filter matches ANY)."""
    return [str(v["id"]) for v in volumes if set(tags) <= set(v.get("tags") or ())]


async def destroy(client: ScalewayClient, settings: VmSettings) -> None:
    zone = settings.zone
    block: set[str] = set()
    local: set[str] = set()
    for server in await find_servers(client, settings):
        step = await _remove_server(client, zone, server)
        block.update(step.block_volumes)
        local.update(step.local_volumes)
    block.update(await _tagged_volumes(client, settings))
    for volume_id in sorted(block):
        await _delete(client, f"/block/v1/zones/{zone}/volumes/{volume_id}")
    for volume_id in sorted(local):
        await _delete(client, f"/instance/v1/zones/{zone}/volumes/{volume_id}")
    for group in await firewall.find_groups(client, settings):
        await _delete(client, f"/instance/v1/zones/{zone}/security_groups/{group['id']}")
    left = await leftovers(client, settings, block | local)
    if left:
        raise DeployError(f"{settings.env}: still there after destroy: {', '.join(left)}")


async def _remove_server(client: ScalewayClient, zone: str, server: dict[str, Any]) -> ServerTeardown:
    path = f"{servers_path(zone)}/{server['id']}"
    for _ in range(GONE_POLLS):
        step = plan_server(server)
        if step.removal is not Removal.WAIT:
            break
        await client.pause(POLL_S)
        server = (await client.request("GET", path)).data["server"]
    else:
        raise DeployError(f"server {server['id']} stays {server.get('state')}; try again later")
    log.info("removing server", extra={"server_id": step.server_id, "removal": step.removal.value})
    if step.removal is Removal.TERMINATE:
        await client.request("POST", f"{path}/action", body={"action": "terminate"})
    else:
        await _delete(client, path)
    for _ in range(GONE_POLLS):
        try:
            await client.request("GET", path)
        except NotFound:
            return step
        await client.pause(POLL_S)
    raise DeployError(f"server {step.server_id} is still there {GONE_POLLS * POLL_S:g} s after its removal")


async def _tagged_volumes(client: ScalewayClient, settings: VmSettings) -> list[str]:
    params = [("tags", tag) for tag in settings.tags] + [("project_id", settings.scw_default_project_id)]
    volumes = await client.list_counted(f"/block/v1/zones/{settings.zone}/volumes", "volumes", params)
    return volumes_of_env(volumes, settings.tags)


async def _delete(client: ScalewayClient, path: str) -> None:
    try:
        await client.request("DELETE", path)
    except NotFound:
        pass  # already gone: what destroy wants


async def leftovers(client: ScalewayClient, settings: VmSettings, volume_ids: set[str]) -> list[str]:
    """What of the env still exists: its servers, security groups, tagged volumes and the volumes it had."""
    zone = settings.zone
    left = [f"server {s['id']}" for s in await find_servers(client, settings)]
    left += [f"security group {g['id']}" for g in await firewall.find_groups(client, settings)]
    volumes = set(await _tagged_volumes(client, settings))
    for volume_id in sorted(volume_ids - volumes):
        for path in (f"/block/v1/zones/{zone}/volumes/{volume_id}", f"/instance/v1/zones/{zone}/volumes/{volume_id}"):
            try:
                await client.request("GET", path)
            except NotFound:
                continue
            volumes.add(volume_id)
    return left + [f"volume {v}" for v in sorted(volumes)]
