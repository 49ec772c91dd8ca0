"""A stateful fake of the Scaleway APIs the provider uses, built from the recorded bodies.

Start it, point the settings at it, inspect it:

    from fake_scaleway import run_fake_scaleway

    async with run_fake_scaleway(polls_to_running=2) as fake:
        settings = settings.replace(**fake.settings_changes())   # SCW_API_URL, key, project, fast retries,
                                                                  # workers open to 127.0.0.1 only
        provider = create_provider("scaleway", settings)
        ...
        assert fake.servers == {} and fake.volumes == {}          # nothing leaked

State, like the real cloud: create -> `stopped` with an sbs boot volume `"<image name>_sbs_volume_0"`
(type sbs_5k, no tags) in slot "0"; `poweron` -> `starting` -> `running` (with `public_ip`, 127.0.0.1
by default so health checks stay on this machine, unless created with `dynamic_ip_required: false`,
as the recorded request was) after `polls_to_running` reads of the server or
`seconds_to_running`; `terminate` (only while running) -> `stopping` for `polls_to_gone` reads, then
the server is gone, its l_ssd/scratch volumes deleted and its sbs volumes detached (`available`,
`references: []`); `DELETE` of a stopped server leaves every volume. Block volumes: create, get, list
(`tags=` repeated, ANY), PATCH tags, delete (412 while in use); attach/detach through the Instance API.
Root volumes: `volumes["0"]` of a create gives the root's size, and `volume_type: "l_ssd"` makes it local.
Resizes: Block `PATCH /block/v1alpha1/.../volumes/{id} {"size"}` (online, never smaller) and Instance
`PATCH .../volumes/{id} {"size"}` of a local volume (only while its server is stopped, never smaller).
`products/servers` (the recorded fr-par-2 catalog), its `availability`, Marketplace `local-images`
(the recorded GPU image plus a few derived ones: `images`). Both pagination styles.
Server user data: `GET .../user_data` lists the keys, `GET|PATCH|DELETE .../user_data/{key}` read,
write (text/plain body only, 204) and delete one value; it goes with its server. With `ssh_host_fingerprints`
set, each server's first power-on publishes it under `ssh-host-fingerprints`, as Scaleway's images do.
Security groups: create (201; inbound/outbound policies default to accept; six non-editable outbound
SMTP drop rules, as recorded), get and list (`servers` computed; list filters `name` (a part matches),
`project`, `tags` comma-joined (ALL), `project_default`; Instance pagination), PATCH, DELETE (409
`conflict` "Group is in use. You cannot delete it." while a server uses it, as Scaleway's SDKs record;
the project's default group too), `GET .../rules` (no X-Total-Count, as recorded) and `PUT .../rules`
(the editable rules become those given, renumbered; a /32 comes back as a bare address, a one-port range
without its end). A server created with `security_group` joins it (404 if it does not exist), else the
project's "Default security group" (inbound accept, made at first use), and shows `{id, name}`.
Private NICs: `POST .../servers/{id}/private_nics` (the server body lists them); a NIC is
`syncing` until the server or NIC is read again, gets an IPv4 (10.<n>.0.0/16 per Private Network, from
.2) and an IPv6 in IPAM (`GET /ipam/v1/regions/{region}/ips`, filters `resource_id`, `resource_type`,
`private_network_id`, `is_ipv6`, `project_id`; counted pagination), and goes with its server. Any
Private Network id exists (there is no VPC API here), and a second NIC on the same network is allowed
(unconfirmed on Scaleway) so that tests can count them.

Inspect: `fake.servers`, `fake.volumes` (Block), `fake.local_volumes` (l_ssd/scratch), all dicts of
API bodies by id; `fake.created_servers` / `fake.created_volumes` (id -> tags of everything ever created,
to count duplicates), `fake.running_since` (server id -> when it was due to be running);
`fake.requests` ((method, path) of every call); `fake.injected_errors` (500s
answered); `fake.user_data` (server id -> key -> value); `fake.first_boot_cloud_init` (server id -> its
`cloud-init` user data when it was first powered on, None if it had none; kept after the server is
gone). `fake.add_scratch_volume(server_id)` gives a server a local volume, as the recorded L40S had.
`fake.security_groups` (bodies by id, without `servers`), `fake.security_group_rules` (group id -> rules),
`fake.created_security_groups` (history, id -> tags), `fake.private_networks` (id -> subnet),
`fake.ipam_ips`. `fake.reachable(server_id, source_ip, port, protocol="TCP", established=False)` says
whether a packet gets in, as Scaleway filters it: from a Private Network the server is on, yes (security
groups filter public traffic only); otherwise only through a public IP, then a reply to the server's own
connection passes a stateful group, and a new one takes the action of the first inbound rule that
matches (platform rules first, then by position; protocol or ANY, ip_range, port range or all ports),
else the group's inbound default policy.

Faults (set them on the object at any time, or as keyword arguments):
- `error_rate`: fraction of API calls answered 500 before anything happens (seeded: `seed`);
  `error_after_rate`: fraction answered 500 after the change was made (a lost reply);
  `fault_paths`: path suffixes (e.g. "/attach-volume", "/action") those two rates are limited to;
  empty: every call; `fault_methods` ("POST", ...) likewise; `faults_left`: how many faults may still be
  injected (None: no limit). A lost reply's retry then meets the changed state, as on the real API;
- `refuse_poweron`: server ids or names whose poweron is refused (`poweron_error`: "out_of_stock",
  "quota" or "invalid");
- `create_errors`: commercial type -> "out_of_stock" or "quota" on server create;
  `volume_create_error`: the same for Block volume creates;
- `availability`: commercial type -> "available" / "scarce" / "shortage";
- `refuse_local_resize`: local volume resizes are refused (400), as older Scaleway texts say they are;
- the `X-Auth-Token` header must equal `secret_key` (401 `denied_authentication` otherwise).
"""

from __future__ import annotations

import copy
import ipaddress
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from scaleway_bodies import GPU_IMAGE_ID, GPU_IMAGE_NAME, products_servers, recorded

SECRET_KEY = "fake-secret-key"
PROJECT_ID = "105bdce1-64c0-48ab-899d-868455867ecf"
GB = 10**9
# Scaleway's GPU images default to a 20 GB sbs root volume (recorded: block_volume_boot_attached).
DEFAULT_ROOT_BYTES = 20 * GB
# Page sizes when the client gives none, and the Instance API's maximum.
INSTANCE_DEFAULT_PER_PAGE = 50
INSTANCE_MAX_PER_PAGE = 100
COUNTED_DEFAULT_PAGE_SIZE = 20

RUNNING_ACTIONS = ["poweroff", "terminate", "reboot", "stop_in_place", "backup"]
STOPPED_ACTIONS = ["poweron", "backup"]
STARTING_ACTIONS = ["stop_in_place", "backup"]
# The platform's own rules in every new group (recorded: enable_default_security blocks SMTP out).
SMTP_PORTS = (25, 465, 587)
RULE_ACTIONS = ("accept", "drop")
RULE_PROTOCOLS = ("TCP", "UDP", "ICMP", "ANY")
RULE_DIRECTIONS = ("inbound", "outbound")


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body


def not_found(resource: str, resource_id: str) -> ApiError:
    return ApiError(
        404, {"type": "not_found", "message": "resource is not found", "resource": resource, "resource_id": resource_id}
    )


def invalid(message: str, status: int = 400) -> ApiError:
    return ApiError(status, {"type": "invalid_request_error", "message": message})


FAULTS: dict[str, ApiError] = {
    "out_of_stock": ApiError(400, {"type": "out_of_stock", "message": "server type is out of stock"}),
    "quota": ApiError(403, {"type": "invalid_request_error", "message": "Quota exceeded for this resource."}),
    "invalid": invalid("server cannot be powered on"),
}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _derived_images() -> list[dict[str, Any]]:
    """The recorded GPU image, plus generic Ubuntu images derived from it (one arm64, to be filtered)."""
    gpu = recorded("marketplace_local_images_gpu")["local_images"]
    noble = {**copy.deepcopy(gpu[0]), "id": str(uuid.UUID(int=1)), "label": "ubuntu_noble"}
    noble["compatible_commercial_types"] = ["PRO2-XXS", "PRO2-XS", "DEV1-S", "DEV1-M", "RENDER-S", "L4-1-24G"]
    noble_arm = {**copy.deepcopy(noble), "id": str(uuid.UUID(int=2)), "arch": "arm64"}
    noble_arm["compatible_commercial_types"] = ["BASIC2-A2C-4G", "PRO2-XXS"]
    return [*gpu, noble_arm, noble]


@dataclass
class FakeScaleway:
    secret_key: str = SECRET_KEY
    project_id: str = PROJECT_ID
    public_ip: str = "127.0.0.1"
    polls_to_running: int = 2
    seconds_to_running: float | None = None
    polls_to_gone: int = 1
    # A new Block volume reads `creating` this many times before it is `available`, as on the real API.
    polls_to_available: int = 0
    error_rate: float = 0.0
    error_after_rate: float = 0.0
    fault_paths: tuple[str, ...] = ()
    fault_methods: tuple[str, ...] = ()
    faults_left: int | None = None
    seed: int = 0
    refuse_poweron: set[str] = field(default_factory=set)
    poweron_error: str = "out_of_stock"
    create_errors: dict[str, str] = field(default_factory=dict)
    volume_create_error: str | None = None
    availability: dict[str, str] = field(default_factory=dict)
    # What Scaleway's images publish at first boot under the user data key `ssh-host-fingerprints`
    # (`ssh-keygen -l` lines of the server's host keys); None: nothing is published.
    ssh_host_fingerprints: str | None = None
    refuse_local_resize: bool = False
    url: str = ""

    def __post_init__(self) -> None:
        self.servers: dict[str, dict[str, Any]] = {}
        self.volumes: dict[str, dict[str, Any]] = {}
        self.local_volumes: dict[str, dict[str, Any]] = {}
        self.products: dict[str, Any] = products_servers()
        self.images: list[dict[str, Any]] = _derived_images()
        self.image_names: dict[str, str] = {GPU_IMAGE_ID: GPU_IMAGE_NAME}
        self.requests: list[tuple[str, str]] = []
        self.user_data: dict[str, dict[str, str]] = {}
        self._creating: dict[str, int] = {}
        # History, kept after the resources are gone: id -> tags of every server and Block volume created,
        # and the wall-clock time each server was due to be running.
        self.created_servers: dict[str, tuple[str, ...]] = {}
        self.created_volumes: dict[str, tuple[str, ...]] = {}
        self.running_since: dict[str, float] = {}
        self.first_boot_cloud_init: dict[str, str | None] = {}
        # Security groups (bodies without `servers`, which is computed), their rules, and the history of creates.
        self.security_groups: dict[str, dict[str, Any]] = {}
        self.security_group_rules: dict[str, list[dict[str, Any]]] = {}
        self.created_security_groups: dict[str, tuple[str, ...]] = {}
        # Private Network id -> its IPv4 subnet (10.<n>.0.0/16, given at first use); IPAM entries by id.
        self.private_networks: dict[str, ipaddress.IPv4Network] = {}
        self.ipam_ips: dict[str, dict[str, Any]] = {}
        self.injected_errors = 0
        self.rng = random.Random(self.seed)
        # server id -> (reads left, monotonic time) until its current transition completes
        self._progress: dict[str, tuple[int, float]] = {}

    def take_fault(self) -> bool:
        """Count one injected fault; False once `faults_left` is spent."""
        if self.faults_left is not None:
            if self.faults_left <= 0:
                return False
            self.faults_left -= 1
        self.injected_errors += 1
        return True

    def settings_changes(self) -> dict[str, Any]:
        """Settings fields that point the Scaleway provider at this fake, with millisecond retries."""
        return {
            "scw_api_url": self.url,
            "scw_secret_key": self.secret_key,
            "scw_default_project_id": self.project_id,
            "scw_retry_base_s": 0.001,
            # Health checks come from this machine: the workers' group opens their port to it alone.
            "scw_worker_allowed_cidrs": "127.0.0.1/32",
        }

    # -- servers -----------------------------------------------------------------------------------

    def create_server(self, zone: str, body: dict[str, Any]) -> dict[str, Any]:
        commercial_type = body.get("commercial_type", "")
        if commercial_type not in self.products:
            raise ApiError(400, {"type": "invalid_arguments", "message": "invalid commercial_type",
                                 "fields": {"commercial_type": [f"{commercial_type!r} is not a server type"]}})
        if not body.get("project"):
            raise ApiError(400, {"type": "invalid_arguments", "message": "project is required"})
        if commercial_type in self.create_errors:
            raise FAULTS[self.create_errors[commercial_type]]
        image = self._image(zone, str(body.get("image", "")), commercial_type)
        group = self._server_group(zone, body)
        server_id = str(uuid.uuid4())
        server = recorded("create_server_response_L40S")["server"]
        server.update(
            id=server_id, name=body.get("name", ""), hostname=body.get("name", ""), commercial_type=commercial_type,
            project=body["project"], organization=body["project"], tags=list(body.get("tags") or []),
            zone=zone, state="stopped", state_detail="", allowed_actions=list(STOPPED_ACTIONS),
            public_ip=None, public_ips=[], private_ip=None, location=None, creation_date=_now(),
            modification_date=_now(), dns=f"{server_id}.pub.instances.scw.cloud",
            dynamic_ip_required=bool(body.get("dynamic_ip_required", True)), volumes={},
            security_group={"id": group["id"], "name": group["name"]}, private_nics=[],
        )
        server["image"].update(id=image["id"], name=self.image_names.get(image["id"], image["label"]), zone=zone)
        self.servers[server_id] = server
        self.created_servers[server_id] = tuple(server["tags"])
        requested = body.get("volumes") or {}
        root = requested.get("0") or {}
        if root.get("volume_type") == "l_ssd":  # a local root, on types with local disk
            self.add_scratch_volume(server_id, int(root.get("size") or DEFAULT_ROOT_BYTES), "l_ssd", "0")
        else:
            self._create_root(server, int(root.get("size") or DEFAULT_ROOT_BYTES))
        for slot, entry in sorted(requested.items()):
            if slot != "0":
                self._create_extra(server, slot, entry)
        return server

    def _image(self, zone: str, wanted: str, commercial_type: str) -> dict[str, Any]:
        matches = [image for image in self.images if wanted in (image["id"], image["label"])]
        if not matches:
            raise not_found("instance_image", wanted)
        # A label names one image per architecture: the one the type boots is taken, as Scaleway resolves it.
        for image in matches:
            if commercial_type in image["compatible_commercial_types"]:
                return image
        raise invalid(f"image {wanted} is not compatible with {commercial_type}")

    def _create_root(self, server: dict[str, Any], size: int) -> None:
        volume = recorded("block_volume_boot_attached")
        volume.update(
            id=str(uuid.uuid4()), name=f"{server['image']['name']}_sbs_volume_0", size=size,
            project_id=server["project"], created_at=_now(), updated_at=_now(), zone=server["zone"], tags=[],
        )
        volume["references"][0].update(id=str(uuid.uuid4()), product_resource_id=server["id"], created_at=_now())
        self.volumes[volume["id"]] = volume
        server["volumes"]["0"] = self._server_entry(volume["id"], server["zone"])

    def _create_extra(self, server: dict[str, Any], slot: str, entry: dict[str, Any]) -> None:
        if entry.get("id") in self.volumes:
            self._attach(server, entry["id"], slot)
        elif entry.get("volume_type") in ("scratch", "l_ssd"):
            self.add_scratch_volume(server["id"], int(entry.get("size") or 0), entry["volume_type"], slot)
        else:
            raise invalid(f"volume {slot}: give an sbs volume id or a scratch/l_ssd volume_type and size")

    @staticmethod
    def _server_entry(volume_id: str, zone: str) -> dict[str, Any]:
        return {"boot": False, "volume_type": "sbs_volume", "id": volume_id, "state": "available", "zone": zone}

    def add_scratch_volume(
        self, server_id: str, size: int = 1600 * GB, volume_type: str = "scratch", slot: str | None = None
    ) -> dict[str, Any]:
        """Give a server a local volume (deleted by terminate, left by DELETE), like the recorded one."""
        server = self.servers[server_id]
        template = recorded("create_server_response_L40S")["server"]["volumes"]["1"]
        template.update(
            id=str(uuid.uuid4()), name=f"{volume_type}-{server_id[:8]}", volume_type=volume_type, size=size,
            project=server["project"], organization=server["project"], zone=server["zone"],
            server={"id": server_id, "name": server["name"]}, creation_date=_now(), modification_date=_now(),
        )
        self.local_volumes[template["id"]] = template
        server["volumes"][slot or self._next_slot(server)] = template
        return template

    @staticmethod
    def _next_slot(server: dict[str, Any]) -> str:
        slot = 0
        while str(slot) in server["volumes"]:
            slot += 1
        return str(slot)

    def get_server(self, zone: str, server_id: str) -> dict[str, Any]:
        server = self.servers.get(server_id)
        if server is None or server["zone"] != zone:
            raise not_found("instance_server", server_id)
        self._advance(server)
        if server_id not in self.servers:
            raise not_found("instance_server", server_id)
        self._settle_nics(server)
        return server

    def list_servers(self, zone: str, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        for server in list(self.servers.values()):
            if server["zone"] == zone:
                self._advance(server)
        tags = set(",".join(query.get("tags", [])).split(",")) - {""}
        found = [s for s in self.servers.values() if s["zone"] == zone and tags <= set(s["tags"])]
        for name in ("project", "commercial_type", "state"):
            if name in query:
                found = [s for s in found if s[name] == query[name][0]]
        if "name" in query:
            found = [s for s in found if query["name"][0] in s["name"]]
        return sorted(found, key=lambda s: s["creation_date"])

    def delete_server(self, zone: str, server_id: str) -> None:
        server = self.get_server(zone, server_id)
        if server["state"] != "stopped":
            raise invalid("server should be stopped")
        for entry in server["volumes"].values():
            if entry["id"] in self.volumes:
                self._release(self.volumes[entry["id"]])
            elif entry["id"] in self.local_volumes:
                self.local_volumes[entry["id"]]["server"] = None
        self._drop_nics(server)
        del self.servers[server_id]
        self.user_data.pop(server_id, None)

    def action(self, zone: str, server_id: str, action: str) -> dict[str, Any]:
        server = self.get_server(zone, server_id)
        handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "poweron": self._poweron, "terminate": self._terminate, "poweroff": self._poweroff,
        }
        if action not in handlers:
            raise ApiError(400, {"type": "invalid_arguments", "message": f"unknown action {action!r}"})
        handlers[action](server)
        task = recorded("poweron_response")
        href = f"/servers/{server_id}/action"
        task["task"].update(id=str(uuid.uuid4()), href_from=href, started_at=_now(), zone=zone)
        return task

    def _poweron(self, server: dict[str, Any]) -> None:
        if server["state"] != "stopped":
            raise invalid("server should be stopped")
        if server["id"] in self.refuse_poweron or server["name"] in self.refuse_poweron:
            raise FAULTS[self.poweron_error]
        if server["id"] not in self.first_boot_cloud_init:
            self.first_boot_cloud_init[server["id"]] = self.user_data.get(server["id"], {}).get("cloud-init")
            if self.ssh_host_fingerprints is not None:
                self.user_data.setdefault(server["id"], {})["ssh-host-fingerprints"] = self.ssh_host_fingerprints
        self._set_state(server, "starting", "allocating node", STARTING_ACTIONS)
        self._progress[server["id"]] = (self.polls_to_running, time.monotonic())
        if self.polls_to_running == 0:
            self._advance(server)

    def _poweroff(self, server: dict[str, Any]) -> None:
        if server["state"] != "running":
            raise invalid("server should be running")
        self._set_state(server, "stopped", "", STOPPED_ACTIONS)
        server["public_ip"], server["public_ips"] = None, []

    def _terminate(self, server: dict[str, Any]) -> None:
        if server["state"] != "running":
            raise invalid("server should be running")
        self._set_state(server, "stopping", "terminating", [])
        for entry in server["volumes"].values():
            if entry["id"] in self.local_volumes:
                entry["state"] = "deleting"
        self._progress[server["id"]] = (self.polls_to_gone, time.monotonic())
        if self.polls_to_gone == 0:
            self._advance(server)

    @staticmethod
    def _set_state(server: dict[str, Any], state: str, detail: str, actions: list[str]) -> None:
        server.update(state=state, state_detail=detail, allowed_actions=list(actions), modification_date=_now())

    def _advance(self, server: dict[str, Any]) -> None:
        """One read of a server in transition: count it, and finish the transition when due."""
        progress = self._progress.get(server["id"])
        if progress is None:
            return
        reads, since = progress
        timed = self.seconds_to_running is not None and time.monotonic() - since >= self.seconds_to_running
        if reads > 0 and not timed:
            self._progress[server["id"]] = (reads - 1, since)
            return
        del self._progress[server["id"]]
        if server["state"] == "starting":
            # When it was due to run (a timed boot is only seen at the next read): what a scheduler could
            # have noticed at the earliest.
            due = since + self.seconds_to_running if timed and self.seconds_to_running is not None else time.monotonic()
            self.running_since[server["id"]] = time.time() - (time.monotonic() - due)
            self._set_state(server, "running", "booting kernel", RUNNING_ACTIONS)
            if server["dynamic_ip_required"]:  # created without one (a Private Network worker): no public IP
                address = {"id": str(uuid.uuid4()), "address": self.public_ip, "dynamic": True, "family": "inet"}
                server["public_ip"], server["public_ips"] = dict(address), [address]
        elif server["state"] == "stopping":
            self._remove_terminated(server)

    def _remove_terminated(self, server: dict[str, Any]) -> None:
        for entry in server["volumes"].values():
            if entry["id"] in self.local_volumes:
                del self.local_volumes[entry["id"]]
            elif entry["id"] in self.volumes:
                self._release(self.volumes[entry["id"]])
        self._drop_nics(server)
        del self.servers[server["id"]]
        self.user_data.pop(server["id"], None)

    def user_data_keys(self, zone: str, server_id: str) -> list[str]:
        self.get_server(zone, server_id)
        return sorted(self.user_data.get(server_id, {}))

    def get_user_data(self, zone: str, server_id: str, key: str) -> str:
        self.get_server(zone, server_id)
        values = self.user_data.get(server_id, {})
        if key not in values:
            raise not_found("instance_user_data", key)
        return values[key]

    def set_user_data(self, zone: str, server_id: str, key: str, content_type: str, value: str) -> None:
        self.get_server(zone, server_id)
        if content_type != "text/plain":
            raise invalid(f"user data must be sent as text/plain, not {content_type or 'nothing'}")
        self.user_data.setdefault(server_id, {})[key] = value

    def delete_user_data(self, zone: str, server_id: str, key: str) -> None:
        self.get_user_data(zone, server_id, key)
        del self.user_data[server_id][key]

    # -- volumes -----------------------------------------------------------------------------------

    def _release(self, volume: dict[str, Any]) -> None:
        volume.update(references=[], status="available", last_detached_at=_now(), updated_at=_now())

    def _attach(self, server: dict[str, Any], volume_id: str, slot: str | None = None) -> None:
        volume = self.volumes.get(volume_id)
        if volume is None or volume["zone"] != server["zone"]:
            raise not_found("volume", volume_id)
        if volume["references"]:
            raise invalid("volume is already attached to a server")
        if volume["status"] == "creating":
            raise ApiError(409, {"type": "transient_state", "message": "volume is in a transient state: creating"})
        reference = copy.deepcopy(recorded("block_volume_boot_attached")["references"][0])
        reference.update(id=str(uuid.uuid4()), product_resource_id=server["id"], created_at=_now())
        volume.update(references=[reference], status="in_use", updated_at=_now())
        server["volumes"][slot or self._next_slot(server)] = self._server_entry(volume_id, server["zone"])

    def attach_volume(self, zone: str, server_id: str, body: dict[str, Any]) -> dict[str, Any]:
        server = self.get_server(zone, server_id)
        if body.get("volume_type") not in (None, "sbs_volume"):
            raise invalid(f"volume_type {body.get('volume_type')!r} cannot be attached")
        self._attach(server, str(body.get("volume_id")))
        return server

    def detach_volume(self, zone: str, server_id: str, body: dict[str, Any]) -> dict[str, Any]:
        server = self.get_server(zone, server_id)
        volume_id = str(body.get("volume_id"))
        slots = [slot for slot, entry in server["volumes"].items() if entry["id"] == volume_id]
        if not slots or volume_id not in self.volumes:
            raise invalid(f"volume {volume_id} is not attached to server {server_id}")
        del server["volumes"][slots[0]]
        self._release(self.volumes[volume_id])
        return server

    def create_volume(self, zone: str, body: dict[str, Any]) -> dict[str, Any]:
        size = int((body.get("from_empty") or {}).get("size") or 0)
        if not 1 * GB <= size <= 10_000 * GB:
            raise ApiError(400, {"type": "invalid_arguments", "message": "size must be between 1 GB and 10 TB"})
        if not body.get("project_id"):
            raise ApiError(400, {"type": "invalid_arguments", "message": "project_id is required"})
        if self.volume_create_error:
            raise FAULTS[self.volume_create_error]
        volume = recorded("block_volume_after_terminate")
        volume.update(
            id=str(uuid.uuid4()), name=body.get("name", ""), type="sbs_5k", size=size, project_id=body["project_id"],
            created_at=_now(), updated_at=_now(), tags=list(body.get("tags") or []), parent_snapshot_id=None,
            last_detached_at=None, zone=zone, references=[],
            status="creating" if self.polls_to_available else "available",
        )
        volume["specs"]["perf_iops"] = int(body.get("perf_iops") or 5000)
        self.volumes[volume["id"]] = volume
        self.created_volumes[volume["id"]] = tuple(volume["tags"])
        if self.polls_to_available:
            self._creating[volume["id"]] = self.polls_to_available
        return volume

    def get_volume(self, zone: str, volume_id: str) -> dict[str, Any]:
        volume = self.volumes.get(volume_id)
        if volume is None or volume["zone"] != zone:
            raise not_found("volume", volume_id)
        if volume_id in self._creating:
            self._creating[volume_id] -= 1
            if self._creating[volume_id] <= 0:
                del self._creating[volume_id]
                volume["status"] = "available"
        return volume

    def list_volumes(self, zone: str, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        tags = set(query.get("tags", []))
        found = [v for v in self.volumes.values() if v["zone"] == zone and (not tags or tags & set(v["tags"]))]
        if "project_id" in query:
            found = [v for v in found if v["project_id"] == query["project_id"][0]]
        if "product_resource_id" in query:
            server = query["product_resource_id"][0]
            found = [v for v in found if any(r["product_resource_id"] == server for r in v["references"])]
        return sorted(found, key=lambda v: v["created_at"])

    def patch_volume(self, zone: str, volume_id: str, body: dict[str, Any]) -> dict[str, Any]:
        volume = self.get_volume(zone, volume_id)
        for name in ("tags", "name"):
            if name in body:
                volume[name] = body[name]
        volume["updated_at"] = _now()
        return volume

    def delete_volume(self, zone: str, volume_id: str) -> None:
        volume = self.get_volume(zone, volume_id)
        if volume["references"]:
            raise ApiError(
                412,
                {"type": "precondition_failed", "precondition": "resource_still_in_use",
                 "message": "resource is still in use"},
            )
        del self.volumes[volume_id]

    def resize_volume(self, zone: str, volume_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Block API `PATCH .../volumes/{id} {"size"}`: online, sizes only go up (Scaleway's docs)."""
        volume = self.get_volume(zone, volume_id)
        size = int(body.get("size") or 0)
        if size < volume["size"]:
            raise ApiError(400, {"type": "invalid_arguments", "message": "volume size can only be increased"})
        volume.update(size=size, updated_at=_now())
        return volume

    def resize_local_volume(self, zone: str, volume_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Instance API `PATCH .../volumes/{id} {"size"}` of a local volume: only while its server is stopped."""
        volume = self.get_local_volume(zone, volume_id)
        size = int(body.get("size") or 0)
        if size < volume["size"]:
            raise invalid("volume size can only be increased")
        if self.refuse_local_resize:  # older SDK texts: "only `b_ssd` volumes can currently be increased in size"
            raise invalid("only b_ssd volumes can be increased in size")
        attached = volume.get("server") and self.servers.get(volume["server"]["id"])
        if attached and attached["state"] != "stopped":
            raise invalid("server should be stopped to resize a local volume")
        volume.update(size=size, modification_date=_now())
        return volume

    def get_local_volume(self, zone: str, volume_id: str) -> dict[str, Any]:
        volume = self.local_volumes.get(volume_id)
        if volume is None or volume["zone"] != zone:
            raise not_found("instance_volume", volume_id)
        return volume

    def delete_local_volume(self, zone: str, volume_id: str) -> None:
        if self.get_local_volume(zone, volume_id).get("server"):
            raise invalid("a volume attached to a server cannot be deleted")
        del self.local_volumes[volume_id]

    # -- security groups ---------------------------------------------------------------------------

    def create_security_group(
        self, zone: str, body: dict[str, Any], *, project_default: bool = False
    ) -> dict[str, Any]:
        project = body.get("project") or body.get("organization")
        if not project:
            raise ApiError(400, {"type": "invalid_arguments", "message": "project is required"})
        policies = {}
        for name in ("inbound_default_policy", "outbound_default_policy"):
            policies[name] = body.get(name) or "accept"
            if policies[name] not in RULE_ACTIONS:
                raise ApiError(400, {"type": "invalid_arguments", "message": f"{name} must be accept or drop"})
        group_id = str(uuid.uuid4())
        group = {
            "id": group_id, "creation_date": _now(), "modification_date": _now(),
            "name": body.get("name") or f"sg-{group_id[:8]}", "description": body.get("description"),
            "organization": project, "project": project, "stateful": bool(body.get("stateful", False)),
            **policies, "organization_default": False, "project_default": project_default,
            "enable_default_security": True, "state": "available", "tags": list(body.get("tags") or []),
            "zone": zone,
        }  # fmt: skip
        self.security_groups[group_id] = group
        self.security_group_rules[group_id] = self._platform_rules(zone)
        self.created_security_groups[group_id] = tuple(group["tags"])
        return self._group_view(group)

    @staticmethod
    def _platform_rules(zone: str) -> list[dict[str, Any]]:
        """The non-editable outbound SMTP drops every new group holds (recorded)."""
        rules = []
        for position, (ip_range, port) in enumerate(
            ((net, port) for net in ("0.0.0.0/0", "::/0") for port in SMTP_PORTS), start=1
        ):
            rules.append({"id": str(uuid.uuid4()), "protocol": "TCP", "direction": "outbound", "ip_range": ip_range,
                          "dest_ip_range": None, "dest_port_from": port, "dest_port_to": None, "position": position,
                          "editable": False, "action": "drop", "zone": zone})  # fmt: skip
        return rules

    def _group(self, zone: str, group_id: str) -> dict[str, Any]:
        group = self.security_groups.get(group_id)
        if group is None or group["zone"] != zone:
            raise not_found("instance_security_group", group_id)
        return group

    def _group_view(self, group: dict[str, Any]) -> dict[str, Any]:
        """The body the API answers: `servers` lists the servers using the group now."""
        servers = [{"id": s["id"], "name": s["name"]} for s in self.servers.values()
                   if s["security_group"]["id"] == group["id"]]  # fmt: skip
        return {**copy.deepcopy(group), "servers": servers}

    def _server_group(self, zone: str, body: dict[str, Any]) -> dict[str, Any]:
        """The group a new server joins: the one named, else the project's default (created on first use)."""
        if body.get("security_group"):
            return self._group(zone, str(body["security_group"]))
        for group in self.security_groups.values():
            if group["zone"] == zone and group["project"] == body["project"] and group["project_default"]:
                return group
        created = self.create_security_group(
            zone, {"name": "Default security group", "project": body["project"], "stateful": True},
            project_default=True,
        )
        return self.security_groups[created["id"]]

    def get_security_group(self, zone: str, group_id: str) -> dict[str, Any]:
        return self._group_view(self._group(zone, group_id))

    def list_security_groups(self, zone: str, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        tags = set(",".join(query.get("tags", [])).split(",")) - {""}
        found = [g for g in self.security_groups.values() if g["zone"] == zone and tags <= set(g["tags"])]
        for name in ("project", "organization"):
            if name in query:
                found = [g for g in found if g[name] == query[name][0]]
        if "name" in query:  # like the servers' name filter, a part of the name matches
            found = [g for g in found if query["name"][0] in g["name"]]
        if "project_default" in query:
            found = [g for g in found if g["project_default"] == (query["project_default"][0] == "true")]
        return [self._group_view(g) for g in sorted(found, key=lambda g: g["creation_date"])]

    def patch_security_group(self, zone: str, group_id: str, body: dict[str, Any]) -> dict[str, Any]:
        group = self._group(zone, group_id)
        for name in ("name", "description", "tags", "stateful", "inbound_default_policy", "outbound_default_policy"):
            if name in body:
                group[name] = body[name]
        group["modification_date"] = _now()
        return self._group_view(group)

    def delete_security_group(self, zone: str, group_id: str) -> None:
        group = self._group(zone, group_id)
        # Recorded by Scaleway's SDKs: 409 conflict while servers use it. The default-group refusal is fog's.
        if self._group_view(group)["servers"]:
            raise ApiError(409, {"type": "conflict", "message": "Group is in use. You cannot delete it."})
        if group["project_default"]:
            raise ApiError(409, {"type": "conflict", "message": "Group is default group. You cannot delete it."})
        del self.security_groups[group_id]
        del self.security_group_rules[group_id]

    def list_security_group_rules(self, zone: str, group_id: str) -> list[dict[str, Any]]:
        self._group(zone, group_id)
        return copy.deepcopy(self.security_group_rules[group_id])

    def set_security_group_rules(self, zone: str, group_id: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        """PUT .../rules: the editable rules become exactly those given (non-editable ones are ignored), numbered
        by position, then by order (position 0, as terraform sends, keeps the order)."""
        group = self._group(zone, group_id)
        given = body.get("rules")
        if not isinstance(given, list):
            raise ApiError(400, {"type": "invalid_arguments", "message": "rules must be a list"})
        wanted = [(int(r.get("position") or 0), i, r) for i, r in enumerate(given) if r.get("editable") is not False]
        rules = [self._rule(zone, r) for _, _, r in sorted(wanted, key=lambda item: item[:2])]
        for position, rule in enumerate(rules, start=1):
            rule["position"] = position
        platform = [r for r in self.security_group_rules[group_id] if not r["editable"]]
        self.security_group_rules[group_id] = platform + rules
        group["modification_date"] = _now()
        return copy.deepcopy(self.security_group_rules[group_id])

    @staticmethod
    def _rule(zone: str, given: dict[str, Any]) -> dict[str, Any]:
        for name, allowed in (("action", RULE_ACTIONS), ("protocol", RULE_PROTOCOLS), ("direction", RULE_DIRECTIONS)):
            if given.get(name) not in allowed:
                raise ApiError(400, {"type": "invalid_arguments", "message": f"rule {name} must be one of {allowed}"})
        try:
            network = ipaddress.ip_network(str(given.get("ip_range")), strict=False)
        except ValueError:
            raise ApiError(400, {"type": "invalid_arguments", "message": "rule ip_range is not a network"}) from None
        port_from, port_to = given.get("dest_port_from"), given.get("dest_port_to")
        if given["protocol"] in ("ICMP", "ANY"):
            port_from = port_to = None
        for port in (port_from, port_to):
            if port is not None and not 1 <= int(port) <= 65535:
                raise ApiError(400, {"type": "invalid_arguments", "message": "rule ports must be 1-65535"})
        # As recorded: a /32 (or /128) comes back as a bare address, a one-port range without its end.
        single = network.prefixlen == network.max_prefixlen
        return {
            "id": given.get("id") or str(uuid.uuid4()), "protocol": given["protocol"],
            "direction": given["direction"], "ip_range": str(network.network_address) if single else str(network),
            "dest_ip_range": None, "dest_port_from": port_from,
            "dest_port_to": None if port_to == port_from else port_to, "position": 0, "editable": True,
            "action": given["action"], "zone": zone,
        }  # fmt: skip

    def reachable(self, server_id: str, source_ip: str, port: int, protocol: str = "TCP", *,
                  established: bool = False) -> bool:  # fmt: skip
        """Whether a packet from `source_ip` to `port` reaches the server, as Scaleway filters it.

        From a Private Network the server is on: yes, security groups filter public traffic only. Otherwise
        it needs a public IP, then its group decides: a reply to the server's own connection (`established`)
        passes a stateful group; else the first inbound rule that matches (platform rules, then editable ones
        by position; protocol or ANY, ip_range, port range or all ports) gives the action, and no match the
        inbound default policy.
        """
        server = self.servers[server_id]
        source = ipaddress.ip_address(source_ip)
        if any(source in self.private_networks[nic["private_network_id"]] for nic in server["private_nics"]):
            return True
        if not server["public_ips"]:
            return False
        group = self.security_groups[server["security_group"]["id"]]
        if established and group["stateful"]:
            return True
        rules = sorted(
            (r for r in self.security_group_rules[group["id"]] if r["direction"] == "inbound"),
            key=lambda r: (r["editable"], r["position"]),
        )
        for rule in rules:
            if _rule_matches(rule, source, port, protocol):
                return bool(rule["action"] == "accept")
        return bool(group["inbound_default_policy"] == "accept")

    # -- private NICs and IPAM ---------------------------------------------------------------------

    def private_network_subnet(self, network_id: str) -> ipaddress.IPv4Network:
        """The subnet of a Private Network, given at first use: the fake has no VPC API, any id exists."""
        if network_id not in self.private_networks:
            self.private_networks[network_id] = ipaddress.IPv4Network(f"10.{len(self.private_networks) + 1}.0.0/16")
        return self.private_networks[network_id]

    def create_private_nic(self, zone: str, server_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """A NIC (state `syncing` until the next read) with an IPv4 and an IPv6 in IPAM. A second NIC on the
        same network is not refused (whether Scaleway does is unconfirmed): tests count them instead."""
        server = self.get_server(zone, server_id)
        network_id = str(body.get("private_network_id") or "")
        try:
            uuid.UUID(network_id)
        except ValueError:
            raise ApiError(400, {"type": "invalid_arguments", "message": "private_network_id must be a UUID"}) from None
        nic_id = str(uuid.uuid4())
        subnet = self.private_network_subnet(network_id)
        taken = sum(1 for ip in self.ipam_ips.values() if ip["private_network_id"] == network_id and not ip["is_ipv6"])
        v4 = self._ipam_ip(server, nic_id, network_id, f"{subnet[taken + 2]}/{subnet.prefixlen}", is_ipv6=False)
        v6 = self._ipam_ip(server, nic_id, network_id, f"fd00:{subnet[0].packed[1]:x}::{taken + 2:x}/64", is_ipv6=True)
        nic = {
            "id": nic_id, "private_network_id": network_id, "server_id": server_id,
            "mac_address": f"02:00:00:{self.rng.randrange(256):02x}:{self.rng.randrange(256):02x}:{taken % 256:02x}",
            "state": "syncing", "creation_date": _now(), "modification_date": _now(), "zone": zone,
            "tags": list(body.get("tags") or []), "ipam_ip_ids": [v4["id"], v6["id"]],
        }  # fmt: skip
        server["private_nics"].append(nic)
        return copy.deepcopy(nic)

    def _ipam_ip(self, server: dict[str, Any], nic_id: str, network_id: str, address: str, *,
                 is_ipv6: bool) -> dict[str, Any]:  # fmt: skip
        ip = {
            "id": str(uuid.uuid4()), "address": address, "project_id": server["project"], "is_ipv6": is_ipv6,
            "created_at": _now(), "updated_at": _now(), "source": {"subnet_id": str(uuid.uuid4())},
            "resource": {"type": "instance_private_nic", "id": nic_id, "mac_address": None, "name": server["name"]},
            "tags": [], "reverses": [], "region": "-".join(server["zone"].split("-")[:2]), "zone": None,
            "private_network_id": network_id,
        }  # fmt: skip
        self.ipam_ips[ip["id"]] = ip
        return ip

    @staticmethod
    def _settle_nics(server: dict[str, Any]) -> None:
        for nic in server["private_nics"]:
            if nic["state"] == "syncing":
                nic.update(state="available", modification_date=_now())

    def _drop_nics(self, server: dict[str, Any]) -> None:
        nic_ids = {nic["id"] for nic in server["private_nics"]}
        for ip_id in [i for i, ip in self.ipam_ips.items() if ip["resource"]["id"] in nic_ids]:
            del self.ipam_ips[ip_id]
        server["private_nics"] = []

    def list_ipam_ips(self, region: str, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        found = [ip for ip in self.ipam_ips.values() if ip["region"] == region]
        for name, value in ((n, query[n][0]) for n in ("resource_id", "resource_type") if n in query):
            found = [ip for ip in found if ip["resource"][name.removeprefix("resource_")] == value]
        for name in ("project_id", "private_network_id"):
            if name in query:
                found = [ip for ip in found if ip[name] == query[name][0]]
        if "is_ipv6" in query:
            found = [ip for ip in found if ip["is_ipv6"] == (query["is_ipv6"][0] == "true")]
        # The real body names no Private Network; the fake keeps it to filter on.
        return [{k: v for k, v in ip.items() if k != "private_network_id"} for ip in found]

    # -- catalog -----------------------------------------------------------------------------------

    def list_images(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """The images with that label and type; every image is offered in every zone."""
        found = self.images
        for name, key in (("image_label", "label"), ("type", "type")):
            if name in query:
                found = [i for i in found if i[key] == query[name][0]]
        zone = query.get("zone", [None])[0]
        return [{**i, "zone": zone or i["zone"]} for i in found]

    def stock(self) -> dict[str, Any]:
        return {name: {"availability": self.availability.get(name, "available")} for name in self.products}


# -- HTTP ----------------------------------------------------------------------------------------------

FAKE: web.AppKey[FakeScaleway] = web.AppKey("fake_scaleway", FakeScaleway)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _query(request: web.Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in request.query.items():
        out.setdefault(key, []).append(value)
    return out


def _instance_page(
    request: web.Request, items: list[Any] | dict[str, Any], key: str, *, total_header: bool = True
) -> web.Response:
    page = int(request.query.get("page", "1"))
    per_page = int(request.query.get("per_page", str(INSTANCE_DEFAULT_PER_PAGE)))
    if not 1 <= per_page <= INSTANCE_MAX_PER_PAGE or page < 1:
        raise ApiError(400, {"type": "invalid_arguments", "message": "per_page must be 1-100, page >= 1"})
    names = list(items)
    chunk = names[(page - 1) * per_page : page * per_page]
    body: Any = {key: {n: items[n] for n in chunk} if isinstance(items, dict) else chunk}
    return web.json_response(body, headers={"X-Total-Count": str(len(names))} if total_header else None)


def _counted_page(request: web.Request, items: list[Any], key: str) -> web.Response:
    page = int(request.query.get("page", "1"))
    size = int(request.query.get("page_size", str(COUNTED_DEFAULT_PAGE_SIZE)))
    chunk = items[(page - 1) * size : page * size]
    return web.json_response({key: chunk, "total_count": len(items)})


@web.middleware
async def _faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    fake = request.app[FAKE]
    fake.requests.append((request.method, request.path))
    if request.headers.get("X-Auth-Token") != fake.secret_key:
        return web.json_response(
            {"message": "authentication is denied", "method": "api_key", "reason": "invalid_argument",
             "type": "denied_authentication"},
            status=401,
        )
    faulty = (not fake.fault_paths or request.path.endswith(fake.fault_paths)) and (
        not fake.fault_methods or request.method in fake.fault_methods
    )
    if faulty and fake.error_rate and fake.rng.random() < fake.error_rate and fake.take_fault():
        return web.json_response({"message": "internal error (injected)", "type": "internal_error"}, status=500)
    try:
        response = await handler(request)
    except ApiError as exc:
        return web.json_response(exc.body, status=exc.status)
    if faulty and fake.error_after_rate and fake.rng.random() < fake.error_after_rate and fake.take_fault():
        return web.json_response({"message": "internal error (injected, after)", "type": "internal_error"}, status=500)
    return response


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, {"type": "invalid_arguments", "message": "body is not JSON"}) from None
    if not isinstance(body, dict):
        raise ApiError(400, {"type": "invalid_arguments", "message": "body must be an object"})
    return body


def create_app(fake: FakeScaleway) -> web.Application:
    app = web.Application(middlewares=[_faults])
    app[FAKE] = fake
    instance = "/instance/v1/zones/{zone}"
    block = "/block/v1/zones/{zone}"
    r = app.router
    r.add_post(f"{instance}/servers", _post_server)
    r.add_get(f"{instance}/servers", _list_servers)
    r.add_get(f"{instance}/servers/{{id}}", _get_server)
    r.add_delete(f"{instance}/servers/{{id}}", _delete_server)
    r.add_post(f"{instance}/servers/{{id}}/action", _action)
    r.add_post(f"{instance}/servers/{{id}}/attach-volume", _attach_volume)
    r.add_post(f"{instance}/servers/{{id}}/detach-volume", _detach_volume)
    r.add_get(f"{instance}/servers/{{id}}/user_data", _list_user_data)
    r.add_get(f"{instance}/servers/{{id}}/user_data/{{key}}", _get_user_data)
    r.add_patch(f"{instance}/servers/{{id}}/user_data/{{key}}", _set_user_data)
    r.add_delete(f"{instance}/servers/{{id}}/user_data/{{key}}", _delete_user_data)
    r.add_post(f"{instance}/servers/{{id}}/private_nics", _post_private_nic)
    r.add_post(f"{instance}/security_groups", _post_security_group)
    r.add_get(f"{instance}/security_groups", _list_security_groups)
    r.add_get(f"{instance}/security_groups/{{id}}", _get_security_group)
    r.add_patch(f"{instance}/security_groups/{{id}}", _patch_security_group)
    r.add_delete(f"{instance}/security_groups/{{id}}", _delete_security_group)
    r.add_get(f"{instance}/security_groups/{{id}}/rules", _list_security_group_rules)
    r.add_put(f"{instance}/security_groups/{{id}}/rules", _set_security_group_rules)
    r.add_get("/ipam/v1/regions/{region}/ips", _list_ipam_ips)
    r.add_get(f"{instance}/volumes/{{id}}", _get_local_volume)
    r.add_delete(f"{instance}/volumes/{{id}}", _delete_local_volume)
    r.add_patch(f"{instance}/volumes/{{id}}", _patch_local_volume)
    r.add_patch("/block/v1alpha1/zones/{zone}/volumes/{id}", _resize_volume)
    r.add_get(f"{instance}/products/servers", _products)
    r.add_get(f"{instance}/products/servers/availability", _availability)
    r.add_post(f"{block}/volumes", _post_volume)
    r.add_get(f"{block}/volumes", _list_volumes)
    r.add_get(f"{block}/volumes/{{id}}", _get_volume)
    r.add_patch(f"{block}/volumes/{{id}}", _patch_volume)
    r.add_delete(f"{block}/volumes/{{id}}", _delete_volume)
    r.add_get("/marketplace/v2/local-images", _local_images)
    return app


def _ids(request: web.Request) -> tuple[FakeScaleway, str, str]:
    return request.app[FAKE], request.match_info["zone"], request.match_info.get("id", "")


async def _post_server(request: web.Request) -> web.Response:
    fake, zone, _ = _ids(request)
    return web.json_response({"server": fake.create_server(zone, await _body(request))}, status=201)


async def _list_servers(request: web.Request) -> web.Response:
    fake, zone, _ = _ids(request)
    return _instance_page(request, fake.list_servers(zone, _query(request)), "servers")


async def _get_server(request: web.Request) -> web.Response:
    fake, zone, server_id = _ids(request)
    return web.json_response({"server": fake.get_server(zone, server_id)})


async def _delete_server(request: web.Request) -> web.Response:
    fake, zone, server_id = _ids(request)
    fake.delete_server(zone, server_id)
    return web.Response(status=204)


async def _action(request: web.Request) -> web.Response:
    fake, zone, server_id = _ids(request)
    body = await _body(request)
    return web.json_response(fake.action(zone, server_id, str(body.get("action"))), status=202)


async def _attach_volume(request: web.Request) -> web.Response:
    fake, zone, server_id = _ids(request)
    return web.json_response({"server": fake.attach_volume(zone, server_id, await _body(request))})


async def _detach_volume(request: web.Request) -> web.Response:
    fake, zone, server_id = _ids(request)
    return web.json_response({"server": fake.detach_volume(zone, server_id, await _body(request))})


async def _list_user_data(request: web.Request) -> web.Response:
    fake, zone, server_id = _ids(request)
    return web.json_response({"user_data": fake.user_data_keys(zone, server_id)})


async def _get_user_data(request: web.Request) -> web.Response:
    fake, zone, server_id = _ids(request)
    return web.Response(text=fake.get_user_data(zone, server_id, request.match_info["key"]))


async def _set_user_data(request: web.Request) -> web.Response:
    fake, zone, server_id = _ids(request)
    value = await request.text()
    fake.set_user_data(zone, server_id, request.match_info["key"], request.content_type, value)
    return web.Response(status=204)


async def _delete_user_data(request: web.Request) -> web.Response:
    fake, zone, server_id = _ids(request)
    fake.delete_user_data(zone, server_id, request.match_info["key"])
    return web.Response(status=204)


def _rule_matches(
    rule: dict[str, Any], source: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, protocol: str
) -> bool:
    if rule["protocol"] not in (protocol, "ANY"):
        return False
    network = ipaddress.ip_network(rule["ip_range"], strict=False)
    if source.version != network.version or source not in network:
        return False
    if rule["dest_port_from"] is None:
        return True
    return bool(rule["dest_port_from"] <= port <= (rule["dest_port_to"] or rule["dest_port_from"]))


async def _post_private_nic(request: web.Request) -> web.Response:
    fake, zone, server_id = _ids(request)
    nic = fake.create_private_nic(zone, server_id, await _body(request))
    return web.json_response({"private_nic": nic}, status=201)


async def _post_security_group(request: web.Request) -> web.Response:
    fake, zone, _ = _ids(request)
    return web.json_response({"security_group": fake.create_security_group(zone, await _body(request))}, status=201)


async def _list_security_groups(request: web.Request) -> web.Response:
    fake, zone, _ = _ids(request)
    return _instance_page(request, fake.list_security_groups(zone, _query(request)), "security_groups")


async def _get_security_group(request: web.Request) -> web.Response:
    fake, zone, group_id = _ids(request)
    return web.json_response({"security_group": fake.get_security_group(zone, group_id)})


async def _patch_security_group(request: web.Request) -> web.Response:
    fake, zone, group_id = _ids(request)
    return web.json_response({"security_group": fake.patch_security_group(zone, group_id, await _body(request))})


async def _delete_security_group(request: web.Request) -> web.Response:
    fake, zone, group_id = _ids(request)
    fake.delete_security_group(zone, group_id)
    return web.Response(status=204)


async def _list_security_group_rules(request: web.Request) -> web.Response:
    fake, zone, group_id = _ids(request)
    # Recorded without X-Total-Count: the client must stop at a short page.
    return _instance_page(request, fake.list_security_group_rules(zone, group_id), "rules", total_header=False)


async def _set_security_group_rules(request: web.Request) -> web.Response:
    fake, zone, group_id = _ids(request)
    return web.json_response({"rules": fake.set_security_group_rules(zone, group_id, await _body(request))})


async def _list_ipam_ips(request: web.Request) -> web.Response:
    fake = request.app[FAKE]
    return _counted_page(request, fake.list_ipam_ips(request.match_info["region"], _query(request)), "ips")


async def _get_local_volume(request: web.Request) -> web.Response:
    fake, zone, volume_id = _ids(request)
    return web.json_response({"volume": fake.get_local_volume(zone, volume_id)})


async def _delete_local_volume(request: web.Request) -> web.Response:
    fake, zone, volume_id = _ids(request)
    fake.delete_local_volume(zone, volume_id)
    return web.Response(status=204)


async def _patch_local_volume(request: web.Request) -> web.Response:
    fake, zone, volume_id = _ids(request)
    return web.json_response({"volume": fake.resize_local_volume(zone, volume_id, await _body(request))})


async def _resize_volume(request: web.Request) -> web.Response:
    fake, zone, volume_id = _ids(request)
    return web.json_response(fake.resize_volume(zone, volume_id, await _body(request)))


async def _products(request: web.Request) -> web.Response:
    return _instance_page(request, request.app[FAKE].products, "servers")


async def _availability(request: web.Request) -> web.Response:
    return _instance_page(request, request.app[FAKE].stock(), "servers")


async def _post_volume(request: web.Request) -> web.Response:
    fake, zone, _ = _ids(request)
    return web.json_response(fake.create_volume(zone, await _body(request)))


async def _list_volumes(request: web.Request) -> web.Response:
    fake, zone, _ = _ids(request)
    return _counted_page(request, fake.list_volumes(zone, _query(request)), "volumes")


async def _get_volume(request: web.Request) -> web.Response:
    fake, zone, volume_id = _ids(request)
    return web.json_response(fake.get_volume(zone, volume_id))


async def _patch_volume(request: web.Request) -> web.Response:
    fake, zone, volume_id = _ids(request)
    return web.json_response(fake.patch_volume(zone, volume_id, await _body(request)))


async def _delete_volume(request: web.Request) -> web.Response:
    fake, zone, volume_id = _ids(request)
    fake.delete_volume(zone, volume_id)
    return web.Response(status=204)


async def _local_images(request: web.Request) -> web.Response:
    return _counted_page(request, request.app[FAKE].list_images(_query(request)), "local_images")


@asynccontextmanager
async def run_fake_scaleway(**options: Any) -> AsyncIterator[FakeScaleway]:
    """The fake, listening on 127.0.0.1 (a free port) until the block ends; `fake.url` is its base URL."""
    fake = FakeScaleway(**options)
    runner = web.AppRunner(create_app(fake), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()
