"""`provision`: the env's server, found by its tags and name (adopted) or created, running, with its root big
enough and its security group in place.

Create: `POST /instance/v1/zones/{zone}/servers` with the root's kind and size in `volumes["0"]`, the image
label, the group, a dynamic public IP and the env's tags; then the cloud-init user data
(`PATCH .../user_data/cloud-init`, text/plain) before the first power-on, as the worker provider does
(providers/scaleway/provider.py). Adopt: the one server with the exact name and every tag; two are refused
(which one is the env's is for an operator to say). A smaller root is grown (root_volume.py).
"""

from __future__ import annotations

import logging
from typing import Any

from inventiv.deploy import firewall
from inventiv.deploy.errors import DeployError
from inventiv.deploy.root_volume import Resize, RootVolume, create_volumes, resize_for, root_entry
from inventiv.deploy.user_data import vm_cloud_config
from inventiv.deploy.vm_settings import VmSettings
from providers.base import InvalidRequest
from providers.scaleway.client import PlainText, ScalewayClient

log = logging.getLogger(__name__)

CLOUD_INIT_KEY = "cloud-init"
# A server boots in well under five minutes; polled every 2 s (each poll is one GET).
BOOT_POLLS = 150
POLL_S = 2.0


def servers_path(zone: str) -> str:
    return f"/instance/v1/zones/{zone}/servers"


def server_request(settings: VmSettings, group_id: str) -> dict[str, Any]:
    return {
        "name": settings.name,
        "commercial_type": settings.commercial_type,
        "image": settings.image_label,
        "project": settings.scw_default_project_id,
        "tags": list(settings.tags),
        "volumes": create_volumes(settings.root_volume_type, settings.root_bytes),
        "security_group": group_id,
        "dynamic_ip_required": True,
    }


def public_address(server: dict[str, Any]) -> str | None:
    ip = server.get("public_ip") or next(iter(server.get("public_ips") or ()), None)
    return str(ip["address"]) if ip and ip.get("address") else None


async def find_servers(client: ScalewayClient, settings: VmSettings) -> list[dict[str, Any]]:
    params = [("tags", ",".join(settings.tags)), ("project", settings.scw_default_project_id)]
    bodies = await client.list_instance(servers_path(settings.zone), "servers", params)
    return [b for b in bodies if b.get("name") == settings.name and set(settings.tags) <= set(b.get("tags") or ())]


async def get_server(client: ScalewayClient, zone: str, server_id: str) -> dict[str, Any]:
    reply = await client.request("GET", f"{servers_path(zone)}/{server_id}")
    server: dict[str, Any] = reply.data["server"]
    return server


async def the_server(client: ScalewayClient, settings: VmSettings) -> dict[str, Any]:
    """The env's one server; DeployError when there is none or more than one."""
    found = await find_servers(client, settings)
    if len(found) != 1:
        ids = ", ".join(str(s["id"]) for s in found) or "none"
        raise DeployError(f"{settings.env}: expected one server named {settings.name}, found {ids}")
    return found[0]


async def provision(client: ScalewayClient, settings: VmSettings) -> dict[str, Any]:
    """The running server of the env, created or adopted, its root at least SCW_ROOT_VOLUME_SIZE_GB."""
    group_id = await firewall.ensure_group(client, settings)
    found = await find_servers(client, settings)
    if len(found) > 1:
        ids = ", ".join(str(s["id"]) for s in found)
        raise DeployError(f"{settings.env}: several servers named {settings.name} ({ids}); delete the extra ones")
    if found:
        server = found[0]
        log.info("server adopted", extra={"server_id": server["id"]})
        current = (server.get("security_group") or {}).get("id")
        if current != group_id:
            raise DeployError(f"server {server['id']} is in security group {current}, not {settings.name} ({group_id})")
        server = await grow_root(client, settings, server)
    else:
        server = await _create(client, settings, group_id)
    if server["state"] != "running":
        server = await power_on(client, settings.zone, str(server["id"]))
    return server


async def _create(client: ScalewayClient, settings: VmSettings, group_id: str) -> dict[str, Any]:
    async def post() -> dict[str, Any]:
        reply = await client.request(
            "POST", servers_path(settings.zone), body=server_request(settings, group_id), idempotent=False
        )
        created: dict[str, Any] = reply.data["server"]
        return created

    server = await client.create_once(post, lambda: find_servers(client, settings))
    log.info("server created", extra={"server_id": server["id"]})
    root = root_entry(server)
    if root.get("volume_type") == "sbs_volume":
        # Scaleway does not copy the server's tags onto its Block root (SCALEWAY.md): without ours, a root left
        # behind by an interrupted destroy could not be found again.
        await client.request("PATCH", f"/block/v1/zones/{settings.zone}/volumes/{root['id']}",
                             body={"tags": list(settings.tags)})  # fmt: skip
    await client.request(
        "PATCH",
        f"{servers_path(settings.zone)}/{server['id']}/user_data/{CLOUD_INIT_KEY}",
        body=PlainText(vm_cloud_config(settings)),
    )
    return server


async def root_volume(client: ScalewayClient, zone: str, server: dict[str, Any]) -> RootVolume:
    """The root's kind (from the server entry) and size (from the API that owns it: sbs entries carry none)."""
    entry = root_entry(server)
    kind = str(entry.get("volume_type") or "")
    if kind == "sbs_volume":
        reply = await client.request("GET", f"/block/v1/zones/{zone}/volumes/{entry['id']}")
        return RootVolume(str(entry["id"]), kind, int(reply.data["size"]))
    size = entry.get("size")
    if size is None:
        reply = await client.request("GET", f"/instance/v1/zones/{zone}/volumes/{entry['id']}")
        size = reply.data["volume"]["size"]
    return RootVolume(str(entry["id"]), kind, int(size))


async def grow_root(client: ScalewayClient, settings: VmSettings, server: dict[str, Any]) -> dict[str, Any]:
    """The server after its root is grown to the wanted size (stopped and started again for a local root)."""
    zone, wanted = settings.zone, settings.root_bytes
    root = await root_volume(client, zone, server)
    action = resize_for(root, wanted)
    if action is Resize.NONE:
        return server
    log.info("growing the root volume", extra={"volume": root.id, "from": root.size_bytes, "to": wanted})
    if action is Resize.BLOCK:
        await client.request("PATCH", f"/block/v1alpha1/zones/{zone}/volumes/{root.id}", body={"size": wanted})
        return await get_server(client, zone, str(server["id"]))
    was_running = server["state"] == "running"
    if was_running:
        await power_off(client, zone, str(server["id"]))
    try:
        await client.request("PATCH", f"/instance/v1/zones/{zone}/volumes/{root.id}", body={"size": wanted})
    except InvalidRequest as exc:
        if was_running:  # back as it was: a refused resize must not leave the control plane down
            await power_on(client, zone, str(server["id"]))
        raise DeployError(f"Scaleway refused to grow local root volume {root.id} to {wanted} bytes: {exc}") from exc
    if was_running:
        return await power_on(client, zone, str(server["id"]))
    return await get_server(client, zone, str(server["id"]))


async def power_on(client: ScalewayClient, zone: str, server_id: str) -> dict[str, Any]:
    await client.request("POST", f"{servers_path(zone)}/{server_id}/action", body={"action": "poweron"})
    return await wait_state(client, zone, server_id, "running")


async def power_off(client: ScalewayClient, zone: str, server_id: str) -> dict[str, Any]:
    await client.request("POST", f"{servers_path(zone)}/{server_id}/action", body={"action": "poweroff"})
    return await wait_state(client, zone, server_id, "stopped")


async def wait_state(client: ScalewayClient, zone: str, server_id: str, state: str) -> dict[str, Any]:
    for _ in range(BOOT_POLLS):
        server = await get_server(client, zone, server_id)
        if server["state"] == state:
            return server
        await client.pause(POLL_S)
    raise DeployError(f"server {server_id} is not {state} after {BOOT_POLLS * POLL_S:g} s")
