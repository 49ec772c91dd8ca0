"""An in-memory `Provider` for fast, deterministic scheduler tests.

It keeps servers and volumes in dicts and behaves like Scaleway where the scheduler cares: a created
server is stopped with a root volume in slot "0" (untagged); `power_on` makes it `starting`, and it is
`running` with an address after `polls_to_running` reads; `terminate_server` of a running server goes
through `stopping` for `polls_to_gone` reads, then deletes its local volumes and detaches the others; of a
stopped server it deletes the server and leaves every volume; deleting an attached volume is a
`TransientError`; a volume attached to one server is refused to another; ids are zoned. `availability`
reports `stock` (by default the mock cloud's types, all in stock). A running server answers health checks
if `worker_address` is set (an in-process mock worker, see `serve_worker`). tests/providers/test_contract.py
holds it to the same contract as the Scaleway provider and the mock cloud.

Faults: `fail(method, error, times)` raises `error` on the next calls of `method` before anything
happens; `crash_after(method)` performs the call and then raises `Crash`, a BaseException nothing in
the scheduler catches, as a process dying between the call and the database write would.
Every call is recorded in `calls` (method, first argument that names a resource).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from providers.base import (
    GB,
    AttachedVolume,
    Availability,
    InvalidRequest,
    NotFound,
    Provider,
    Server,
    ServerSpec,
    ServerState,
    TransientError,
    Volume,
    VolumeState,
)
from providers.mock.cloud import MOCK_TYPES
from providers.mock.worker import WorkerConfig, create_app
from providers.scaleway.images import DEFAULT_LABELS

ROOT_BYTES = 20 * GB
LOCAL_TYPES = ("l_ssd", "scratch")


class Crash(BaseException):
    """The scheduler process 'dies' right after a cloud call succeeded."""


@dataclass
class MemServer:
    id: str
    name: str
    zone: str
    commercial_type: str
    tags: tuple[str, ...]
    image: str | None
    model: str | None
    engine: str
    worker_secret: str | None
    state: ServerState = ServerState.STOPPED
    polls_left: int = 0
    # Scaleway's `stopped in place`: neither terminate nor delete until it runs again.
    stopped_in_place: bool = False
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class MemVolume:
    id: str
    name: str
    zone: str
    volume_type: str
    size_bytes: int
    tags: tuple[str, ...] = ()
    server_id: str | None = None
    slot: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class MemoryProvider(Provider):
    def __init__(
        self,
        code: str = "mock",
        *,
        polls_to_running: int = 1,
        polls_to_gone: int = 0,
        worker_address: tuple[str, int] | None = None,
        diskless_types: Sequence[str] = (),
        images: dict[tuple[str, str], str] | None = None,
        stock: dict[str, Availability] | None = None,
    ) -> None:
        self.code = code
        self.polls_to_running = polls_to_running
        self.polls_to_gone = polls_to_gone
        self.worker_address = worker_address
        self.diskless_types = set(diskless_types)
        # (commercial type, label) -> image id, for resolve_boot_image; labels tried when none are given,
        # the Scaleway provider's own.
        self.images = dict(images or {})
        self.default_labels = DEFAULT_LABELS
        # commercial type -> stock, for availability(); by default the mock cloud's types, all in stock.
        self.stock = dict(stock) if stock is not None else dict.fromkeys(MOCK_TYPES, Availability.AVAILABLE)
        self.servers: dict[str, MemServer] = {}
        self.volumes: dict[str, MemVolume] = {}
        self.calls: list[tuple[str, str]] = []
        self._faults: dict[str, list[BaseException]] = defaultdict(list)
        self._crash_after: set[str] = set()
        self._ids = itertools.count(1)

    # -- faults ----------------------------------------------------------------------------------------

    def fail(self, method: str, error: BaseException, times: int = 1) -> None:
        self._faults[method].extend([error] * times)

    def crash_after(self, method: str) -> None:
        self._crash_after.add(method)

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    def _enter(self, method: str, subject: str = "") -> None:
        self.calls.append((method, subject))
        if self._faults[method]:
            raise self._faults[method].pop(0)

    def _leave(self, method: str) -> None:
        if method in self._crash_after:
            self._crash_after.discard(method)
            raise Crash(method)

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids):04d}"

    # -- servers ---------------------------------------------------------------------------------------

    async def create_server(self, spec: ServerSpec) -> Server:
        self._enter("create_server", spec.name)
        server = MemServer(
            self._new_id("srv"), spec.name, spec.zone, spec.commercial_type, tuple(spec.tags), spec.image,
            spec.model, spec.engine, spec.worker_secret,
        )  # fmt: skip
        self.servers[server.id] = server
        root = MemVolume(self._new_id("vol"), f"{spec.image or 'image'}_sbs_volume_0", spec.zone, "sbs_volume",
                         spec.root_volume_bytes or ROOT_BYTES, server_id=server.id, slot="0")  # fmt: skip
        self.volumes[root.id] = root
        self._leave("create_server")
        return self._server(server)

    async def get_server(self, zone: str, server_id: str) -> Server | None:
        self._enter("get_server", server_id)
        server = self.servers.get(server_id)
        if server is None or server.zone != zone:
            return None
        self._tick(server)
        if server.id not in self.servers:
            return None
        return self._server(server)

    async def list_servers(self, zone: str, tags: Sequence[str]) -> list[Server]:
        self._enter("list_servers", ",".join(tags))
        wanted = set(tags)
        found = [s for s in self.servers.values() if s.zone == zone and wanted <= set(s.tags)]
        # A listing reads each server, as get_server does: a transition advances either way.
        for server in found:
            self._tick(server)
        # Volumes grouped once, not scanned once per server: a listing of a large fleet stays linear.
        attached: dict[str, list[MemVolume]] = defaultdict(list)
        for volume in self.volumes.values():
            if volume.server_id is not None:
                attached[volume.server_id].append(volume)
        return [self._server(s, attached[s.id]) for s in found if s.id in self.servers]

    async def power_on(self, zone: str, server_id: str) -> None:
        self._enter("power_on", server_id)
        server = self._get(zone, server_id)
        if server.state is ServerState.STOPPED:
            server.state, server.polls_left = ServerState.STARTING, self.polls_to_running
        self._leave("power_on")

    async def terminate_server(self, zone: str, server_id: str) -> None:
        self._enter("terminate_server", server_id)
        server = self.servers.get(server_id)
        if server is None or server.zone != zone or server.state is ServerState.STOPPING:
            return
        if server.stopped_in_place:
            if server.state is not ServerState.RUNNING:
                raise InvalidRequest(f"server {server_id} is stopped in place: power it on to terminate it")
            server.stopped_in_place = False
        if server.state is ServerState.STOPPED:
            self._remove(server, keep_local=True)
        else:
            server.state, server.polls_left = ServerState.STOPPING, self.polls_to_gone
            self._tick(server)
        self._leave("terminate_server")

    def _tick(self, server: MemServer) -> None:
        """One read of a server in transition."""
        if server.state is ServerState.STARTING:
            if server.polls_left <= 0:
                server.state = ServerState.RUNNING
            server.polls_left -= 1
        elif server.state is ServerState.STOPPING:
            if server.polls_left <= 0:
                self._remove(server, keep_local=False)
            server.polls_left -= 1

    def _remove(self, server: MemServer, *, keep_local: bool) -> None:
        del self.servers[server.id]
        for volume in list(self.volumes.values()):
            if volume.server_id != server.id:
                continue
            if volume.volume_type in LOCAL_TYPES and not keep_local:
                del self.volumes[volume.id]
            else:
                volume.server_id, volume.slot = None, None

    def _get(self, zone: str, server_id: str) -> MemServer:
        server = self.servers.get(server_id)
        if server is None or server.zone != zone:
            raise NotFound(f"no server {server_id}")
        return server

    def _volume_in(self, zone: str, volume_id: str) -> MemVolume | None:
        """The volume, if it exists in this zone: ids are zoned on the clouds this provider stands in for."""
        volume = self.volumes.get(volume_id)
        return volume if volume is not None and volume.zone == zone else None

    def _server(self, server: MemServer, attached: Sequence[MemVolume] | None = None) -> Server:
        if attached is None:
            attached = [v for v in self.volumes.values() if v.server_id == server.id]
        running = server.state is ServerState.RUNNING
        address = self.worker_address if running else None
        return Server(
            id=server.id,
            name=server.name,
            zone=server.zone,
            commercial_type=server.commercial_type,
            state=server.state,
            tags=server.tags,
            volumes=tuple(self._attached(v) for v in _by_slot(attached)),
            ip_address=address[0] if address else ("10.0.0.1" if running else None),
            worker_port=address[1] if address else None,
            created_at=server.created_at,
            vendor_state="stopped in place" if server.stopped_in_place else server.state.value,
            allowed_actions=("poweron",) if server.state is ServerState.STOPPED else ("terminate",),
        )

    # -- volumes ---------------------------------------------------------------------------------------

    async def list_server_volumes(self, zone: str, server_id: str) -> list[AttachedVolume]:
        self._enter("list_server_volumes", server_id)
        self._get(zone, server_id)
        return [self._attached(v) for v in _by_slot(v for v in self.volumes.values() if v.server_id == server_id)]

    async def create_volume(self, zone: str, name: str, size_bytes: int, tags: Sequence[str]) -> Volume:
        self._enter("create_volume", name)
        if size_bytes <= 0:
            raise InvalidRequest(f"volume size must be positive, not {size_bytes} bytes")
        volume = MemVolume(self._new_id("vol"), name, zone, "sbs_volume", size_bytes, tuple(tags))
        self.volumes[volume.id] = volume
        self._leave("create_volume")
        return self._volume(volume)

    async def get_volume(self, zone: str, volume_id: str) -> Volume | None:
        self._enter("get_volume", volume_id)
        volume = self._volume_in(zone, volume_id)
        return None if volume is None else self._volume(volume)

    async def list_volumes(self, zone: str, tags: Sequence[str]) -> list[Volume]:
        self._enter("list_volumes", ",".join(tags))
        wanted = set(tags)
        # No tags: every volume of the zone, as the Block API answers a listing without a tags filter.
        found = (v for v in self.volumes.values() if v.zone == zone and (not wanted or wanted & set(v.tags)))
        return [self._volume(v) for v in found]

    async def attach_volume(self, zone: str, server_id: str, volume_id: str) -> None:
        self._enter("attach_volume", volume_id)
        self._get(zone, server_id)
        volume = self._volume_in(zone, volume_id)
        if volume is None:
            raise NotFound(f"no volume {volume_id}")
        if volume.server_id not in (None, server_id):
            raise InvalidRequest(f"volume {volume_id} is attached to server {volume.server_id}")
        if volume.server_id is None:
            used = {v.slot for v in self.volumes.values() if v.server_id == server_id}
            volume.server_id, volume.slot = server_id, next(str(i) for i in itertools.count() if str(i) not in used)
        self._leave("attach_volume")

    async def detach_volume(self, zone: str, server_id: str, volume_id: str) -> None:
        self._enter("detach_volume", volume_id)
        volume = self._volume_in(zone, volume_id)
        if volume is None or volume.server_id is None:
            return
        if volume.server_id != server_id:
            raise InvalidRequest(f"volume {volume_id} is attached to server {volume.server_id}")
        volume.server_id, volume.slot = None, None

    async def delete_volume(self, zone: str, volume_id: str) -> None:
        self._enter("delete_volume", volume_id)
        volume = self._volume_in(zone, volume_id)
        if volume is None:
            return
        if volume.server_id is not None:
            raise TransientError(f"volume {volume_id} is in use")
        del self.volumes[volume_id]

    async def set_volume_tags(self, zone: str, volume_id: str, tags: Sequence[str]) -> None:
        self._enter("set_volume_tags", volume_id)
        volume = self._volume_in(zone, volume_id)
        if volume is None:
            raise NotFound(f"no volume {volume_id}")
        volume.tags = tuple(tags)

    # -- catalog ---------------------------------------------------------------------------------------

    async def needs_boot_image(self, zone: str, commercial_type: str) -> bool:
        self._enter("needs_boot_image", commercial_type)
        return commercial_type in self.diskless_types

    async def resolve_boot_image(self, zone: str, commercial_type: str, labels: Sequence[str]) -> str | None:
        self._enter("resolve_boot_image", commercial_type)
        for label in labels or self.default_labels:
            if (commercial_type, label) in self.images:
                return self.images[(commercial_type, label)]
        return None

    async def availability(self, zone: str) -> dict[str, Availability]:
        self._enter("availability", zone)
        return dict(self.stock)

    # -- helpers for tests -----------------------------------------------------------------------------

    def add_volume(self, zone: str, name: str, size_gb: int, tags: Sequence[str] = (), server_id: str | None = None,
                   volume_type: str = "sbs_volume") -> MemVolume:  # fmt: skip
        """A volume made outside the scheduler (by an operator), optionally attached."""
        volume = MemVolume(self._new_id("vol"), name, zone, volume_type, size_gb * GB, tuple(tags))
        self.volumes[volume.id] = volume
        if server_id is not None:
            used = {v.slot for v in self.volumes.values() if v.server_id == server_id}
            volume.server_id, volume.slot = server_id, next(str(i) for i in itertools.count() if str(i) not in used)
        return volume

    def vanish(self, server_id: str) -> None:
        """The server disappears behind the scheduler's back (deleted by hand), its volumes left detached."""
        self._remove(self.servers[server_id], keep_local=False)

    def add_server(self, zone: str, name: str, tags: Sequence[str], state: ServerState = ServerState.RUNNING,
                   created_at: datetime | None = None) -> MemServer:  # fmt: skip
        server = MemServer(self._new_id("srv"), name, zone, "MOCK-GPU-S", tuple(tags), None, None, {}, state)
        if created_at is not None:
            server = replace(server, created_at=created_at)
        self.servers[server.id] = server
        return server

    @staticmethod
    def _attached(volume: MemVolume) -> AttachedVolume:
        return AttachedVolume(volume.id, volume.slot or "", volume.volume_type, volume.size_bytes, volume.name)

    @staticmethod
    def _volume(volume: MemVolume) -> Volume:
        state = VolumeState.IN_USE if volume.server_id else VolumeState.AVAILABLE
        return Volume(volume.id, volume.name, volume.zone, volume.volume_type, volume.size_bytes, state,
                      volume.tags, volume.server_id, volume.created_at)  # fmt: skip


def _by_slot(volumes: Iterable[MemVolume]) -> list[MemVolume]:
    """A server's volumes in slot order, as Scaleway's `volumes` map and the mock cloud list them."""
    return sorted(volumes, key=lambda v: int(v.slot or 0))


@asynccontextmanager
async def serve_worker(model: str, **config: Any) -> AsyncIterator[tuple[str, int]]:
    """An in-process mock worker serving `model` on a free local port (`config`: more WorkerConfig
    fields, e.g. api_key); yields (host, port)."""
    runner = web.AppRunner(create_app(WorkerConfig(model=model, **config)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield host, port
    finally:
        await runner.cleanup()
