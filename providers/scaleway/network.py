"""Who may reach a Scaleway worker: the security group every worker joins, and the optional Private Network.

Security group. A server with a public IP has every port open unless a security group says otherwise, and
the worker serves on port 8000. So every server the provider creates joins one group per deployment tag and
zone, `<tag>-workers`, tagged `<tag>` and `role=workers`: inbound dropped by default, outbound accepted,
stateful (replies to the worker's own connections come back in). Its rules accept TCP on the worker port
from each network of INVENTIV_SCW_WORKER_ALLOWED_CIDRS and TCP 22 from each of INVENTIV_SCW_SSH_ALLOWED_CIDRS
(none: SSH closed); nothing else. The group is found by name and tags in the project, else created (a create
whose reply was lost is found by listing again, never made twice), then reconciled: drifted policies are
PATCHed back and, when the editable rules differ from that list, all of them are replaced by one PUT. So
changing a setting and restarting the scheduler fixes the group. Its id is then cached per zone for the
provider's lifetime. With no worker networks (and no Private Network) `create_server` refuses before any
cloud call (SCW_WORKER_CIDRS_REQUIRED): such a worker would serve the whole internet or no one.

Private Network (INVENTIV_SCW_PRIVATE_NETWORK_ID). Workers are created without a public IP and join the
network through a private NIC, added before each power-on unless the server already has one there (an
adopted or restarted server gets no second NIC). Their address is the NIC's private IPv4, from IPAM.
Security groups filter public traffic only: on the Private Network the worker port is open to the members of
that network, and to no one else (narrow it further with the VPC's network ACLs). The group still applies,
so a public IP attached by hand would expose nothing but the worker port to INVENTIV_SCW_WORKER_ALLOWED_CIDRS,
which is optional here. Workers then need a Public Gateway on the network to download images and models.

Facts used and where they come from (scaleway/scaleway-sdk-go: api/instance/v1/instance_sdk.go, api/ipam/v1/
ipam_sdk.go, scw/locality.go, scw/errors_test.go, api/instance/v1/testdata/test-api-update-security-group*.
cassette.yaml; scaleway/terraform-provider-scaleway: internal/services/instance/security_group.go and the
recorded internal/services/instance/testdata/{security-group-rules-basic,data-source-security-group-basic,
private-nic-basic}.cassette.yaml, the last as of the commit before 77c2fa0d8; scaleway/docs-content:
pages/vpc/faq.mdx):
- POST /instance/v1/zones/{z}/security_groups {name, description, project, tags, stateful,
  inbound_default_policy, outbound_default_policy (accept|drop)} -> 201 {"security_group": {id, name,
  project, tags, stateful, *_default_policy, servers: [{id, name}], state, creation_date, zone}}.
- GET .../security_groups?project=&name=&tags=a,b (comma-joined) + page/per_page -> {"security_groups"},
  the total only in X-Total-Count; GET|PATCH|DELETE .../security_groups/{id}; DELETE -> 204, and 409
  `conflict` "Group is in use. You cannot delete it." while servers use it.
- PUT .../security_groups/{id}/rules {"rules": [{action, protocol (TCP|UDP|ICMP|ANY), direction
  (inbound|outbound), ip_range, dest_port_from, dest_port_to, position, editable}]} replaces the editable
  rules (updates, creates, deletes those not passed; editable: false ones are ignored) -> {"rules"}.
  GET .../rules lists them (recorded without any total). The API numbers positions itself, answers a /32
  ip_range as a bare address and dest_port_to null when equal to dest_port_from, and a new group already
  holds non-editable outbound SMTP drop rules.
- Server create takes `security_group` (an id) and `dynamic_ip_required`; server bodies carry
  `security_group: {id, name}` and `private_nics: [PrivateNIC]`; there is no Private Network field at create.
- POST .../servers/{id}/private_nics {"private_network_id"} -> 201 {"private_nic": {id, server_id,
  private_network_id, mac_address, state (syncing -> available | syncing_error), ipam_ip_ids}}.
- The NIC's address: GET /ipam/v1/regions/{region}/ips?resource_id={nic id}&resource_type=instance_private_nic
  &is_ipv6=false (page/page_size, total_count) -> {"ips": [{address: "172.22.216.2/22", is_ipv6, resource}]};
  the server's own `private_ip` stays null. A zone's region is its first two parts (fr-par-2 -> fr-par).
- Security groups filter public traffic only; network ACLs filter Private Network traffic (docs-content).
Not seen recorded, so handled defensively: a private NIC added to a stopped server; what a server create
answers for a security group that no longer exists.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inventiv.settings import Settings, SettingsError
from providers.base import Firewall, InvalidRequest, NotFound, Server, TransientError
from providers.scaleway import mapping
from providers.scaleway.client import ScalewayClient

log = logging.getLogger(__name__)

SSH_PORT = 22
# Tells the workers' group from any other group carrying the deployment tag.
ROLE_TAG = "role=workers"
# What the group must say, whatever was changed by hand: deny by default, replies allowed back in.
GROUP_POLICY: dict[str, Any] = {"inbound_default_policy": "drop", "outbound_default_policy": "accept", "stateful": True}
PRIVATE_NIC = "instance_private_nic"


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """What the settings say about reaching workers (see the module docstring)."""

    deployment_tag: str
    worker_port: int
    worker_cidrs: tuple[str, ...] = ()
    ssh_cidrs: tuple[str, ...] = ()
    private_network_id: str | None = None

    @property
    def group_name(self) -> str:
        return f"{self.deployment_tag}-workers"

    @property
    def group_tags(self) -> tuple[str, ...]:
        return (self.deployment_tag, ROLE_TAG)


def policy_from_settings(settings: Settings, worker_port: int) -> NetworkPolicy:
    try:
        worker_cidrs, ssh_cidrs = settings.scw_worker_cidrs, settings.scw_ssh_cidrs
    except SettingsError as exc:
        raise InvalidRequest(str(exc), code="PROVIDER_NOT_CONFIGURED") from None
    return NetworkPolicy(settings.deployment_tag, worker_port, worker_cidrs, ssh_cidrs, settings.scw_private_network_id)


# -- pure decisions ------------------------------------------------------------------------------------


def unprotected_worker(policy: NetworkPolicy) -> InvalidRequest | None:
    """The refusal for a worker nobody could reach safely, or None."""
    if policy.worker_cidrs or policy.private_network_id:
        return None
    return InvalidRequest(
        "a public Scaleway worker needs INVENTIV_SCW_WORKER_ALLOWED_CIDRS (the networks that may reach its "
        "port: the scheduler's and the gateways' addresses), or INVENTIV_SCW_PRIVATE_NETWORK_ID to keep it "
        "on a Private Network",
        code="SCW_WORKER_CIDRS_REQUIRED",
    )


def group_request(policy: NetworkPolicy, project_id: str) -> dict[str, Any]:
    return {
        "name": policy.group_name,
        "description": "Inventiv workers: inbound dropped except the worker port from the allowed networks",
        "project": project_id,
        "tags": list(policy.group_tags),
        **GROUP_POLICY,
    }


def desired_rules(policy: NetworkPolicy) -> list[dict[str, Any]]:
    """The group's editable rules, in order: the worker port, then SSH, each from its allowed networks."""
    wanted = [(cidr, policy.worker_port) for cidr in policy.worker_cidrs]
    wanted += [(cidr, SSH_PORT) for cidr in policy.ssh_cidrs]
    return [
        {"action": "accept", "protocol": "TCP", "direction": "inbound", "ip_range": cidr,
         "dest_port_from": port, "dest_port_to": None, "position": position, "editable": True}
        for position, (cidr, port) in enumerate(wanted, start=1)
    ]  # fmt: skip


def policy_drift(group: dict[str, Any]) -> dict[str, Any]:
    """The PATCH that puts the group's policies back, empty when they are right."""
    return {name: value for name, value in GROUP_POLICY.items() if group.get(name) != value}


def _network_text(value: Any) -> str:
    try:
        return str(ipaddress.ip_network(str(value), strict=False))
    except ValueError:
        return str(value)


def rule_key(rule: dict[str, Any]) -> tuple[Any, ...]:
    """A rule as the API keeps it: `1.2.3.4` is `1.2.3.4/32`, a port range of one port has no end."""
    port_from, port_to = rule.get("dest_port_from"), rule.get("dest_port_to")
    return (
        rule.get("direction"), rule.get("action"), rule.get("protocol"), _network_text(rule.get("ip_range")),
        port_from, None if port_to == port_from else port_to,
    )  # fmt: skip


def rules_differ(current: Sequence[dict[str, Any]], desired: Sequence[dict[str, Any]]) -> bool:
    """Whether the group's editable rules (the platform's own are not ours to change) differ from `desired`."""
    editable = sorted((r for r in current if r.get("editable", True)), key=lambda r: int(r.get("position") or 0))
    return [rule_key(r) for r in editable] != [rule_key(r) for r in desired]


def server_fields(policy: NetworkPolicy, group_id: str) -> dict[str, Any]:
    """What a server create body says about networking."""
    # A public worker needs its IP from power-on to termination; one on a Private Network gets none.
    return {"security_group": group_id, "dynamic_ip_required": policy.private_network_id is None}


def nic_on(server_body: dict[str, Any], network_id: str) -> dict[str, Any] | None:
    for nic in server_body.get("private_nics") or ():
        if nic.get("private_network_id") == network_id:
            return dict(nic)
    return None


def private_ipv4(ips: Sequence[dict[str, Any]]) -> str | None:
    """The IPv4 among IPAM entries; addresses come in CIDR notation (`172.22.216.2/22`)."""
    for ip in ips:
        if not ip.get("is_ipv6") and ip.get("address"):
            return str(ipaddress.ip_interface(str(ip["address"])).ip)
    return None


def region_of(zone: str) -> str:
    return "-".join(zone.split("-")[:2])


def firewall_from_body(body: dict[str, Any], zone: str) -> Firewall:
    return Firewall(
        id=str(body["id"]),
        name=str(body.get("name") or ""),
        zone=str(body.get("zone") or zone),
        tags=tuple(body.get("tags") or ()),
        server_ids=tuple(str(s["id"]) for s in body.get("servers") or () if s.get("id")),
        created_at=mapping.parse_time(body.get("creation_date")),
    )


# -- the calls -----------------------------------------------------------------------------------------


class WorkerNetwork:
    """A provider's worker networking: its security group per zone (cached) and Private Network membership."""

    def __init__(self, client: ScalewayClient, project_id: str, policy: NetworkPolicy) -> None:
        self.client = client
        self.project_id = project_id
        self.policy = policy
        self._groups: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Private NIC id -> its IPv4, fixed for the NIC's life: IPAM is asked once per NIC, not per poll.
        self._addresses: dict[str, str] = {}

    def refuse_unprotected(self) -> None:
        refusal = unprotected_worker(self.policy)
        if refusal is not None:
            raise refusal

    async def server_fields(self, zone: str) -> dict[str, Any]:
        return server_fields(self.policy, await self.security_group(zone))

    # -- security group ----------------------------------------------------------------------------

    def _lock(self, zone: str) -> asyncio.Lock:
        return self._locks.setdefault(zone, asyncio.Lock())

    async def security_group(self, zone: str) -> str:
        """The workers' group in `zone`, found or created and reconciled once per provider object."""
        async with self._lock(zone):
            if zone not in self._groups:
                group = await self._find_or_create(zone)
                await self._reconcile(zone, group)
                self._groups[zone] = str(group["id"])
            return self._groups[zone]

    async def _find_or_create(self, zone: str) -> dict[str, Any]:
        found = await self._groups_named(zone)
        if found:
            return found[0]

        async def post() -> dict[str, Any]:
            body = group_request(self.policy, self.project_id)
            reply = await self.client.request("POST", _groups(zone), body=body, idempotent=False)
            group: dict[str, Any] = reply.data["security_group"]
            return group

        group = await self.client.create_once(post, lambda: self._groups_named(zone))
        log.info("scaleway security group created", extra={"zone": zone, "security_group": group["id"]})
        return group

    async def _groups_named(self, zone: str) -> list[dict[str, Any]]:
        tags = self.policy.group_tags
        params = [("project", self.project_id), ("name", self.policy.group_name), ("tags", ",".join(tags))]
        bodies = await self.client.list_instance(_groups(zone), "security_groups", params)
        # The name filter may match part of a name: only the exact name with every tag is ours. Two (a race
        # between schedulers) resolve to the oldest, whoever asks.
        found = [b for b in bodies if b.get("name") == self.policy.group_name and set(tags) <= set(b.get("tags") or ())]
        return sorted(found, key=lambda b: (str(b.get("creation_date") or ""), str(b["id"])))

    async def _reconcile(self, zone: str, group: dict[str, Any]) -> None:
        path = f"{_groups(zone)}/{group['id']}"
        drift = policy_drift(group)
        if drift:
            log.warning("scaleway security group policy restored", extra={"security_group": group["id"], **drift})
            await self.client.request("PATCH", path, body=drift)
        desired = desired_rules(self.policy)
        if rules_differ(await self.client.list_instance(f"{path}/rules", "rules"), desired):
            opened = [f"{r['ip_range']}:{r['dest_port_from']}" for r in desired]
            log.info("scaleway security group rules replaced", extra={"security_group": group["id"], "rules": opened})
            await self.client.request("PUT", f"{path}/rules", body={"rules": desired})

    async def forget_if_gone(self, zone: str) -> None:
        """After a refused server create: when the cached group was deleted behind our back, forget it and raise
        TransientError, so the retry finds or makes a group again instead of failing the same way forever."""
        group_id = self._groups.get(zone)
        if group_id is None:
            return
        try:
            await self.client.request("GET", f"{_groups(zone)}/{group_id}")
        except NotFound:
            self._groups.pop(zone, None)
            raise TransientError(f"Scaleway security group {group_id} in {zone} is gone; a retry makes one") from None

    async def list_firewalls(self, zone: str, tags: Sequence[str]) -> list[Firewall]:
        params = [("project", self.project_id)]
        if tags:
            params.append(("tags", ",".join(tags)))
        bodies = await self.client.list_instance(_groups(zone), "security_groups", params)
        return [firewall_from_body(b, zone) for b in bodies if set(tags) <= set(b.get("tags") or ())]

    async def delete_firewall(self, zone: str, firewall_id: str) -> None:
        path = f"{_groups(zone)}/{firewall_id}"
        # Serialised with `security_group`, so a create never gets the id of a group being deleted.
        async with self._lock(zone):
            try:
                group = (await self.client.request("GET", path)).data["security_group"]
                if group.get("servers"):
                    raise TransientError(
                        f"Scaleway security group {firewall_id} is used by {len(group['servers'])} server(s); "
                        "delete it once they are gone"
                    )
                await self.client.request("DELETE", path)
            except NotFound:
                pass
            if self._groups.get(zone) == firewall_id:
                del self._groups[zone]

    # -- private network ---------------------------------------------------------------------------

    async def join_private_network(
        self, zone: str, server_id: str, body: dict[str, Any], reread: Callable[[], Awaitable[dict[str, Any] | None]]
    ) -> None:
        """Give the server (its `body` as just read) a NIC on the Private Network unless it has one there
        (no-op without a network); `reread` reads it again, after a create whose reply was lost."""
        network_id = self.policy.private_network_id
        if network_id is None or nic_on(body, network_id) is not None:
            return

        async def post() -> dict[str, Any]:
            reply = await self.client.request(
                "POST",
                f"{_servers(zone)}/{server_id}/private_nics",
                body={"private_network_id": network_id},
                idempotent=False,
            )
            nic: dict[str, Any] = reply.data["private_nic"]
            return nic

        async def find() -> list[dict[str, Any]]:
            again = await reread()
            nic = None if again is None else nic_on(again, network_id)
            return [] if nic is None else [nic]

        nic = await self.client.create_once(post, find)
        log.info("scaleway server joined its private network", extra={"server_id": server_id, "nic": nic["id"]})

    async def with_address(self, zone: str, server: Server, server_body: dict[str, Any]) -> Server:
        """The server with its private IPv4 as its address when it is on the Private Network."""
        address = await self._private_address(zone, server_body)
        return server if address is None else dataclasses.replace(server, ip_address=address)

    async def _private_address(self, zone: str, server_body: dict[str, Any]) -> str | None:
        network_id = self.policy.private_network_id
        nic = None if network_id is None else nic_on(server_body, network_id)
        if nic is None:
            return None
        nic_id = str(nic["id"])
        if nic_id not in self._addresses:
            params = [("resource_id", nic_id), ("resource_type", PRIVATE_NIC), ("is_ipv6", "false")]
            ips = await self.client.list_counted(f"/ipam/v1/regions/{region_of(zone)}/ips", "ips", params)
            address = private_ipv4(ips)
            if address is None:
                return None  # not yet given one: the caller polls again
            self._addresses[nic_id] = address
        return self._addresses[nic_id]


def _groups(zone: str) -> str:
    return f"/instance/v1/zones/{zone}/security_groups"


def _servers(zone: str) -> str:
    return f"/instance/v1/zones/{zone}/servers"
