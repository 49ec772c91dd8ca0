"""The VM's security group: inbound dropped except HTTP and HTTPS from anywhere and SSH from SSH_ALLOWED_CIDRS.

One group per env, named and tagged like the server, found by both or created, then reconciled the way the
workers' group is (providers/scaleway/network.py: the same policy, the same rule comparison, one PUT of the
editable rules when they differ), so a rule opened by hand is closed again at the next `provision`.
"""

from __future__ import annotations

import logging
from typing import Any

from inventiv.deploy.vm_settings import VmSettings
from providers.scaleway.client import ScalewayClient
from providers.scaleway.network import GROUP_POLICY, policy_drift, rules_differ

log = logging.getLogger(__name__)

# Caddy answers the ACME HTTP challenge and redirects to HTTPS on 80, and serves the API on 443.
PUBLIC_PORTS = (80, 443)
EVERYONE = ("0.0.0.0/0", "::/0")


def desired_rules(ssh_cidrs: tuple[str, ...], ssh_port: int) -> list[dict[str, Any]]:
    """The group's editable rules, in order: 80 and 443 from anywhere, then SSH from each allowed network."""
    wanted = [(cidr, port) for port in PUBLIC_PORTS for cidr in EVERYONE]
    wanted += [(cidr, ssh_port) for cidr in ssh_cidrs]
    return [
        {"action": "accept", "protocol": "TCP", "direction": "inbound", "ip_range": cidr,
         "dest_port_from": port, "dest_port_to": None, "position": position, "editable": True}
        for position, (cidr, port) in enumerate(wanted, start=1)
    ]  # fmt: skip


def group_request(settings: VmSettings) -> dict[str, Any]:
    return {
        "name": settings.name,
        "description": f"Inventiv control plane ({settings.env}): 80 and 443, SSH from the allowed networks",
        "project": settings.scw_default_project_id,
        "tags": list(settings.tags),
        **GROUP_POLICY,
    }


def _groups(zone: str) -> str:
    return f"/instance/v1/zones/{zone}/security_groups"


async def find_groups(client: ScalewayClient, settings: VmSettings) -> list[dict[str, Any]]:
    params = [("project", settings.scw_default_project_id), ("tags", ",".join(settings.tags))]
    bodies = await client.list_instance(_groups(settings.zone), "security_groups", params)
    # The API's name filter matches parts of names: keep the exact name with every tag.
    found = [b for b in bodies if b.get("name") == settings.name and set(settings.tags) <= set(b.get("tags") or ())]
    return sorted(found, key=lambda b: (str(b.get("creation_date") or ""), str(b["id"])))


async def ensure_group(client: ScalewayClient, settings: VmSettings) -> str:
    """The env's group id, found or created, with its policy and rules as desired_rules says."""
    found = await find_groups(client, settings)
    if found:
        group = found[0]
    else:

        async def post() -> dict[str, Any]:
            reply = await client.request("POST", _groups(settings.zone), body=group_request(settings), idempotent=False)
            created: dict[str, Any] = reply.data["security_group"]
            return created

        group = await client.create_once(post, lambda: find_groups(client, settings))
        log.info("security group created", extra={"security_group": group["id"]})
    path = f"{_groups(settings.zone)}/{group['id']}"
    drift = policy_drift(group)
    if drift:
        await client.request("PATCH", path, body=drift)
    desired = desired_rules(settings.ssh_cidrs, settings.ssh_port)
    if rules_differ(await client.list_instance(f"{path}/rules", "rules"), desired):
        await client.request("PUT", f"{path}/rules", body={"rules": desired})
    return str(group["id"])
