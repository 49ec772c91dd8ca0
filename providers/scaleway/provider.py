"""The Scaleway provider: Instance API for servers, Block API for volumes, Marketplace for images.

Facts it relies on (SCALEWAY.md): a created server is stopped; `terminate` is only offered while it
runs and deletes l_ssd/scratch volumes but only detaches sbs ones; a stopped server is removed with
`DELETE`, which leaves every volume behind; sbs entries in a server body carry no size (the Block API
has it); the root volume is slot "0" whatever its boot flag; a gone resource answers 404; a terminated
server reads `stopping` / `terminating` with no actions left until it is gone (recorded), so a second
`terminate_server` then is done, as one of a server already gone is.
Attach and detach are serialised per server: Scaleway rejects concurrent volume changes of one server.
The client repeats attach, detach and terminate after a 5xx; when the first call went through and only
its reply was lost, the repeat is refused (400). Each of them then reads the volume or server again and
counts the change as done when that state shows it, whatever the refusal's message says.

Worker boot: a server created for a model (`ServerSpec.model`) carries it in `model=` and `engine=` tags
and gets the `cloud-init` user data (`cloud_init.py`, built by `worker_boot.py`) right after the POST,
while it is still stopped: cloud-init reads it at the first boot only. When that write fails the server
exists, so `create_server` raises TransientError; the scheduler's retry finds the server by its tags
and adopts it without calling `create_server` again. So `power_on` makes sure of it: on a stopped server
with a model tag and no `cloud-init` key it writes the user data, then powers on. The tags are set by
the POST itself, so this also covers a scheduler that died between the POST and the write. Chosen over a
separate provider method because it changes neither the provider interface nor the scheduler, and every
server passes through `power_on` before its first boot. The user data holds the worker secret (the
engine's API key, derived again from the `instance=` tag for an adopted server): Scaleway serves user
data on the instance only to root (a privileged source port), and the boot script keeps the secret in
root-only files.
"""

from __future__ import annotations

import asyncio
import enum
import weakref
from collections.abc import Sequence
from typing import Any

from inventiv.settings import Settings
from providers.base import (
    GB,
    AttachedVolume,
    Availability,
    Firewall,
    InvalidRequest,
    NotFound,
    NotReady,
    Provider,
    ProviderError,
    Server,
    ServerSpec,
    ServerState,
    TransientError,
    Volume,
    VolumeState,
)
from providers.scaleway import mapping
from providers.scaleway.client import PlainText, RetryPolicy, ScalewayClient
from providers.scaleway.images import DEFAULT_LABELS, BootImages
from providers.scaleway.network import NetworkPolicy, WorkerNetwork, policy_from_settings
from providers.scaleway.worker_boot import MODEL_TAG, WORKER_PORT, WorkerBootConfig, tagged

SBS_VOLUME = "sbs_volume"
# Block API volumes are created at 5000 IOPS, the class Scaleway gives boot volumes (sbs_5k).
PERF_IOPS = 5000
# States where the server is changing and a terminate or delete will be possible shortly.
_WAIT_STATES = frozenset({ServerState.STARTING, ServerState.STOPPING, ServerState.LOCKED})
# Volume states in which an attach must wait (a new Block volume is `creating` for a moment), and how long
# attach_volume waits for it: a few seconds cover a create, a longer wait is left to the scheduler's retry.
_NOT_ATTACHABLE = frozenset({VolumeState.CREATING, VolumeState.BUSY})
_ATTACH_READY_POLLS = 5
_ATTACH_READY_POLL_S = 1.0
# Volume states in which a delete must wait (still attached, detaching or busy).
_NOT_DELETABLE = frozenset({VolumeState.IN_USE, VolumeState.BUSY, VolumeState.CREATING})
# Block volume reference statuses that mean an attach to that server was accepted; any other status
# (detaching, detached) or no reference at all means a detach was.
_ATTACHED_REFERENCES = frozenset({"attaching", "attached"})
# The user data key cloud-init reads on Scaleway's images.
CLOUD_INIT_KEY = "cloud-init"


class Termination(enum.Enum):
    TERMINATE = "terminate"  # action terminate: the server and its local volumes go, sbs volumes detach
    DELETE = "delete"  # DELETE a stopped server: every volume stays
    WAIT = "wait"  # changing state: try again shortly
    REFUSE = "refuse"  # e.g. stopped in place: the caller must power it on first


def termination(server: Server) -> Termination:
    """How to make this server go away now."""
    if "terminate" in server.allowed_actions or server.state is ServerState.RUNNING:
        return Termination.TERMINATE
    if server.vendor_state == "stopped":
        return Termination.DELETE
    if server.state in _WAIT_STATES:
        return Termination.WAIT
    return Termination.REFUSE


def terminate_accepted(server_body: dict[str, Any] | None) -> bool:
    """Whether a server read after a refused terminate shows that an earlier terminate went through:
    it is gone, or stopping on its way out (recorded: `stopping` / `terminating`, no actions left)."""
    if server_body is None:
        return True
    return server_body.get("state") == "stopping" and server_body.get("state_detail") == "terminating"


def attached_to(volume_body: dict[str, Any] | None, server_id: str) -> bool:
    """Whether a Block volume is attached, or attaching, to this server (detaching counts as detached)."""
    for ref in (volume_body or {}).get("references") or ():
        if (
            ref.get("product_resource_type") == "instance_server"
            and ref.get("product_resource_id") == server_id
            and ref.get("status") in _ATTACHED_REFERENCES
        ):
            return True
    return False


class ScalewayProvider(Provider):
    code = "scaleway"

    def __init__(
        self,
        client: ScalewayClient,
        project_id: str,
        *,
        default_image_labels: Sequence[str] = DEFAULT_LABELS,
        boot: WorkerBootConfig | None = None,
        worker_root_gb: int = Settings.scw_worker_root_volume_gb,
        network: NetworkPolicy | None = None,
    ) -> None:
        self.client = client
        self.project_id = project_id
        self.boot = boot or WorkerBootConfig.from_settings(Settings())
        self.worker_root_bytes = worker_root_gb * GB
        self._default_labels = tuple(default_image_labels)
        self._images = BootImages(client)
        self._server_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # Security group and Private Network of the workers (network.py).
        self.network = WorkerNetwork(client, project_id, network or NetworkPolicy(Settings.deployment_tag, WORKER_PORT))

    @classmethod
    def from_settings(cls, settings: Settings) -> ScalewayProvider:
        key, project = settings.scw_secret_key, settings.scw_default_project_id
        if not key or not project:
            given = {"SCW_SECRET_KEY": key, "SCW_DEFAULT_PROJECT_ID": project}
            missing = [name for name, value in given.items() if not value]
            raise InvalidRequest(
                f"the scaleway provider needs {' and '.join(missing)} (or {missing[0]}_FILE) in the environment",
                code="PROVIDER_NOT_CONFIGURED",
            )
        client = ScalewayClient(key, settings.scw_api_url, retry=RetryPolicy(base_s=settings.scw_retry_base_s))
        return cls(
            client, project, boot=WorkerBootConfig.from_settings(settings),
            worker_root_gb=settings.scw_worker_root_volume_gb,
            network=policy_from_settings(settings, WORKER_PORT),
        )

    async def close(self) -> None:
        await self.client.close()

    def _lock(self, server_id: str) -> asyncio.Lock:
        lock = self._server_locks.get(server_id)
        if lock is None:
            lock = asyncio.Lock()
            self._server_locks[server_id] = lock
        return lock

    # -- servers -----------------------------------------------------------------------------------

    async def create_server(self, spec: ServerSpec) -> Server:
        # A worker open to the whole internet (no allowed networks, no Private Network) is never made.
        self.network.refuse_unprotected()
        # Built first: a model id that cannot go into user data is refused before anything exists.
        user_data = self.boot.for_spec(spec)
        image = spec.image or await self._default_image(spec.zone, spec.commercial_type)
        body: dict[str, Any] = {
            "name": spec.name,
            "commercial_type": spec.commercial_type,
            "image": image,
            "project": self.project_id,
            "tags": self.boot.tags(spec),
            "boot_type": "local",
        }
        # Its security group, and a public IP unless it lives on a Private Network.
        body.update(await self.network.server_fields(spec.zone))
        root_bytes = spec.root_volume_bytes or await self._worker_root_bytes(spec)
        if root_bytes:
            body["volumes"] = {"0": {"size": root_bytes, "volume_type": SBS_VOLUME}}

        async def post() -> Server:
            return mapping.server_from_body((await self._post(_servers(spec.zone), body))["server"])

        try:
            server = await self.client.create_once(post, lambda: self._servers_named(spec.zone, spec.name, spec.tags))
        except (NotFound, InvalidRequest):
            await self.network.forget_if_gone(spec.zone)  # a group deleted behind our back: the retry makes one
            raise
        if user_data is not None:
            try:
                await self._set_cloud_init(spec.zone, server.id, user_data)
            except ProviderError as exc:
                raise TransientError(
                    f"Scaleway server {server.id} was created but its cloud-init user data could not be set "
                    f"({exc.message}); power-on sets it before the first boot"
                ) from exc
        return server

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        return (await self.client.request("POST", path, body=body, idempotent=False)).data

    async def _servers_named(self, zone: str, name: str, tags: Sequence[str]) -> list[Server]:
        return mapping.oldest_first(s for s in await self.list_servers(zone, tags) if s.name == name)

    async def _volumes_named(self, zone: str, name: str, tags: Sequence[str]) -> list[Volume]:
        # The Block API matches ANY tag: the volume must carry them all.
        found = (v for v in await self.list_volumes(zone, tags) if v.name == name and set(tags) <= set(v.tags))
        return mapping.oldest_first(found)

    async def _set_cloud_init(self, zone: str, server_id: str, user_data: str) -> None:
        # A PUT in all but name: writing the same value again changes nothing, so retries are safe.
        await self.client.request(
            "PATCH", f"{_servers(zone)}/{server_id}/user_data/{CLOUD_INIT_KEY}", body=PlainText(user_data)
        )

    async def _ensure_cloud_init(self, zone: str, server_id: str, body: dict[str, Any]) -> None:
        """Write the user data of a server created for a model if it has none yet (see the module docstring)."""
        tags = body.get("tags") or ()
        # cloud-init reads it at the first boot: a server starting or running is past that point.
        if tagged(tags, MODEL_TAG) is None or body.get("state") != "stopped":
            return
        reply = await self.client.request("GET", f"{_servers(zone)}/{server_id}/user_data")
        if CLOUD_INIT_KEY not in (reply.data or {}).get("user_data", ()):
            await self._set_cloud_init(zone, server_id, self.boot.for_model_tags(tags))

    async def _worker_root_bytes(self, spec: ServerSpec) -> int | None:
        """A worker's root volume: the worker image and Docker's layers outgrow the image's 20 GB.

        Only diskless types boot from an sbs root whose size we choose; types with a local disk keep it.
        """
        if spec.model and await self.needs_boot_image(spec.zone, spec.commercial_type):
            return self.worker_root_bytes
        return None

    async def _default_image(self, zone: str, commercial_type: str) -> str:
        image = await self._images.resolve(zone, commercial_type, self._default_labels)
        if image is None:
            raise InvalidRequest(
                f"no boot image for {commercial_type} in {zone} with labels {', '.join(self._default_labels)}",
                code="SCW_DISKLESS_BOOT_IMAGE_REQUIRED",
            )
        return image

    async def get_server(self, zone: str, server_id: str) -> Server | None:
        body = await self._server_body(zone, server_id)
        if body is None:
            return None
        # On a Private Network its address is the private one (IPAM), not in the server body.
        return await self.network.with_address(zone, mapping.server_from_body(body), body)

    async def _server_body(self, zone: str, server_id: str) -> dict[str, Any] | None:
        try:
            reply = await self.client.request("GET", f"{_servers(zone)}/{server_id}")
        except NotFound:
            return None
        server: dict[str, Any] = reply.data["server"]
        return server

    async def list_servers(self, zone: str, tags: Sequence[str]) -> list[Server]:
        params = [("project", self.project_id)]
        if tags:
            params.append(("tags", ",".join(tags)))
        bodies = await self.client.list_instance(_servers(zone), "servers", params)
        servers = [mapping.server_from_body(body) for body in bodies]
        # The API matches every tag exactly; checking again costs nothing and guards the sweeps.
        return [s for s in servers if set(tags) <= set(s.tags)]

    async def power_on(self, zone: str, server_id: str) -> None:
        body = await self._server_body(zone, server_id)
        if body is None:
            raise NotFound(f"Scaleway server {server_id} not found in {zone}")
        await self._ensure_cloud_init(zone, server_id, body)
        await self.network.join_private_network(zone, server_id, body, lambda: self._server_body(zone, server_id))
        try:
            await self.client.request("POST", f"{_servers(zone)}/{server_id}/action", body={"action": "poweron"})
        except InvalidRequest:
            # A retried poweron that went through the first time is refused ("should be stopped").
            server = await self.get_server(zone, server_id)
            if server is None or server.state not in (ServerState.STARTING, ServerState.RUNNING):
                raise

    async def terminate_server(self, zone: str, server_id: str) -> None:
        body = await self._server_body(zone, server_id)
        # Gone, or already stopping on its way out: a terminate (ours or an earlier one) is under way.
        if body is None or terminate_accepted(body):
            return
        server = mapping.server_from_body(body)
        how = termination(server)
        try:
            if how is Termination.TERMINATE:
                await self._terminate_action(zone, server_id)
            elif how is Termination.DELETE:
                await self.client.request("DELETE", f"{_servers(zone)}/{server_id}")
            elif how is Termination.WAIT:
                raise TransientError(f"Scaleway server {server_id} is {server.vendor_state}; terminate it later")
            else:
                raise InvalidRequest(
                    f"Scaleway server {server_id} is {server.vendor_state} (allowed: "
                    f"{', '.join(server.allowed_actions) or 'nothing'}): power it on to terminate it"
                )
        except NotFound:
            return

    async def _terminate_action(self, zone: str, server_id: str) -> None:
        try:
            await self.client.request("POST", f"{_servers(zone)}/{server_id}/action", body={"action": "terminate"})
        except InvalidRequest:
            # A retried terminate whose first reply was lost is refused ("server should be running"):
            # the server itself says whether the first one went through.
            if not terminate_accepted(await self._server_body(zone, server_id)):
                raise

    # -- volumes -----------------------------------------------------------------------------------

    async def list_server_volumes(self, zone: str, server_id: str) -> list[AttachedVolume]:
        body = await self._server_body(zone, server_id)
        if body is None:
            raise NotFound(f"Scaleway server {server_id} not found in {zone}")
        volumes = mapping.attached_volumes(body)
        return list(await asyncio.gather(*(self._with_size(zone, volume) for volume in volumes)))

    async def _with_size(self, zone: str, volume: AttachedVolume) -> AttachedVolume:
        if volume.size_bytes is not None:
            return volume
        block = await self._block_volume(zone, volume.id)
        if block is None:
            return volume
        return AttachedVolume(volume.id, volume.slot, volume.volume_type, block.size_bytes, block.name)

    async def create_volume(self, zone: str, name: str, size_bytes: int, tags: Sequence[str]) -> Volume:
        if size_bytes <= 0:
            raise InvalidRequest(f"volume size must be positive, not {size_bytes} bytes")
        body = {
            "name": name,
            "project_id": self.project_id,
            "tags": list(tags),
            "perf_iops": PERF_IOPS,
            "from_empty": {"size": size_bytes},
        }

        async def post() -> Volume:
            return mapping.volume_from_body(await self._post(_volumes(zone), body))

        return await self.client.create_once(post, lambda: self._volumes_named(zone, name, tags))

    async def get_volume(self, zone: str, volume_id: str) -> Volume | None:
        block = await self._block_volume(zone, volume_id)
        if block is not None:
            return block
        # Not a Block volume: maybe a local one (l_ssd, scratch) that a DELETE of its server left.
        try:
            reply = await self.client.request("GET", f"{_instance_volumes(zone)}/{volume_id}")
        except NotFound:
            return None
        return mapping.volume_from_instance_body(reply.data["volume"])

    async def _block_volume(self, zone: str, volume_id: str) -> Volume | None:
        body = await self._block_volume_body(zone, volume_id)
        return None if body is None else mapping.volume_from_body(body)

    async def _block_volume_body(self, zone: str, volume_id: str) -> dict[str, Any] | None:
        try:
            reply = await self.client.request("GET", f"{_volumes(zone)}/{volume_id}")
        except NotFound:
            return None
        volume: dict[str, Any] = reply.data
        return volume

    async def list_volumes(self, zone: str, tags: Sequence[str]) -> list[Volume]:
        params = [("project_id", self.project_id), *(("tags", tag) for tag in tags)]
        bodies = await self.client.list_counted(_volumes(zone), "volumes", params)
        return [mapping.volume_from_body(body) for body in bodies]

    async def attach_volume(self, zone: str, server_id: str, volume_id: str) -> None:
        async with self._lock(server_id):
            volume = await self._attachable_volume(zone, volume_id)
            if volume.server_id == server_id:
                return
            if volume.server_id is not None:
                raise InvalidRequest(f"Scaleway volume {volume_id} is attached to server {volume.server_id}")
            try:
                await self.client.request(
                    "POST",
                    f"{_servers(zone)}/{server_id}/attach-volume",
                    body={"volume_id": volume_id, "volume_type": SBS_VOLUME},
                )
            except InvalidRequest:
                # A retried attach whose first reply was lost is refused ("already attached"): the
                # volume says whether it is attached to this server now.
                if not attached_to(await self._block_volume_body(zone, volume_id), server_id):
                    raise

    async def _attachable_volume(self, zone: str, volume_id: str) -> Volume:
        """The volume once it may be attached: a new Block volume is `creating` for a moment after its create,
        which is when the scheduler attaches it, so it is waited for here rather than failed and retried."""
        for poll in range(1, _ATTACH_READY_POLLS + 1):
            volume = await self._block_volume(zone, volume_id)
            if volume is None:
                raise NotFound(f"Scaleway volume {volume_id} not found in {zone}")
            if volume.state not in _NOT_ATTACHABLE or volume.server_id is not None:
                return volume
            if poll == _ATTACH_READY_POLLS:
                raise NotReady(f"Scaleway volume {volume_id} is {volume.state}; attach it once it is available")
            await self.client.pause(_ATTACH_READY_POLL_S)
        raise AssertionError("unreachable: the last poll returns or raises")

    async def detach_volume(self, zone: str, server_id: str, volume_id: str) -> None:
        async with self._lock(server_id):
            volume = await self._block_volume(zone, volume_id)
            if volume is None or volume.server_id is None:
                return
            if volume.server_id != server_id:
                raise InvalidRequest(f"Scaleway volume {volume_id} is attached to server {volume.server_id}")
            try:
                await self.client.request(
                    "POST", f"{_servers(zone)}/{server_id}/detach-volume", body={"volume_id": volume_id}
                )
            except NotFound:
                return
            except InvalidRequest:
                # A retried detach whose first reply was lost is refused ("volume is not attached"):
                # detaching or detached, the volume is no longer this server's.
                if attached_to(await self._block_volume_body(zone, volume_id), server_id):
                    raise

    async def delete_volume(self, zone: str, volume_id: str) -> None:
        volume = await self._block_volume(zone, volume_id)
        if volume is None:
            await self._delete_instance_volume(zone, volume_id)
            return
        if volume.state in _NOT_DELETABLE or volume.server_id is not None:
            raise TransientError(
                f"Scaleway volume {volume_id} is {volume.state} (server {volume.server_id}); delete it once detached"
            )
        try:
            await self.client.request("DELETE", f"{_volumes(zone)}/{volume_id}")
        except NotFound:
            return

    async def _delete_instance_volume(self, zone: str, volume_id: str) -> None:
        try:
            await self.client.request("DELETE", f"{_instance_volumes(zone)}/{volume_id}")
        except NotFound:
            return

    async def set_volume_tags(self, zone: str, volume_id: str, tags: Sequence[str]) -> None:
        await self.client.request("PATCH", f"{_volumes(zone)}/{volume_id}", body={"tags": list(tags)})

    # -- firewalls (network.py) --------------------------------------------------------------------

    async def list_firewalls(self, zone: str, tags: Sequence[str]) -> list[Firewall]:
        return await self.network.list_firewalls(zone, tags)

    async def delete_firewall(self, zone: str, firewall_id: str) -> None:
        await self.network.delete_firewall(zone, firewall_id)

    # -- catalog -----------------------------------------------------------------------------------

    async def needs_boot_image(self, zone: str, commercial_type: str) -> bool:
        return await self._images.needs_boot_image(zone, commercial_type)

    async def resolve_boot_image(self, zone: str, commercial_type: str, labels: Sequence[str]) -> str | None:
        return await self._images.resolve(zone, commercial_type, labels or self._default_labels)

    async def availability(self, zone: str) -> dict[str, Availability]:
        stock = await self.client.map_instance(f"/instance/v1/zones/{zone}/products/servers/availability", "servers")
        return {name: mapping.availability(entry.get("availability", "")) for name, entry in stock.items()}


def _servers(zone: str) -> str:
    return f"/instance/v1/zones/{zone}/servers"


def _instance_volumes(zone: str) -> str:
    return f"/instance/v1/zones/{zone}/volumes"


def _volumes(zone: str) -> str:
    return f"/block/v1/zones/{zone}/volumes"
