"""The mock cloud: a stateful local cloud whose servers are real mock worker processes.

`MockCloud(state_dir)` keeps its servers, volumes and injected faults in one JSON file under `state_dir`
(see `store.py`), so every instance opened on that folder (a scheduler, its standby, a test) sees one
cloud, and it survives a restart. A server is a record plus, once powered on, a detached
`python -m providers.mock.worker` on a free local port. Its state is computed on every read:
no live process -> stopped; a live process whose `/health` does not answer yet -> starting;
answering -> running, at 127.0.0.1 and `worker_port`.

Like Scaleway: `create_server` leaves the server stopped with an untagged boot volume in slot "0";
`terminate_server` deletes the boot volume and leaves data volumes detached; deleting a volume that is
attached is refused with `TransientError`.

Faults for tests are stored in the same file, so a test can inject them into the cloud a scheduler
process uses: `fail_power_on(target)` (a server id, name or tag), `set_out_of_stock(type)`,
`fail_next_calls(n)` (the next n calls of any instance raise `TransientError`), `clear_faults()`.
`stop_all_workers(state_dir)` ends every worker process the cloud ever started (test teardown).
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp

from providers import base
from providers.base import (
    AttachedVolume,
    Availability,
    InvalidRequest,
    NotFound,
    OutOfStock,
    Provider,
    ProviderError,
    QuotaExceeded,
    Server,
    ServerSpec,
    ServerState,
    TransientError,
    Volume,
    VolumeState,
)
from providers.mock import processes
from providers.mock.processes import ProcessRef
from providers.mock.store import Document, StateFile, empty_document

T = TypeVar("T")

# The types the mock cloud sells; the demo catalog seeds the same codes.
MOCK_TYPES = ("MOCK-GPU-S", "MOCK-GPU-M")
# The one image the mock boots: the worker itself.
MOCK_IMAGE = "mock-worker"
VOLUME_TYPE = "mock_block"
# Scaleway's GPU images come with a 20 GB root volume; the mock mirrors that default.
BOOT_VOLUME_BYTES = 20 * base.GB
WORKER_HOST = "127.0.0.1"

# What each state lets a caller do, shaped like Scaleway's `allowed_actions`.
ALLOWED_ACTIONS: dict[ServerState, tuple[str, ...]] = {
    ServerState.STOPPED: ("poweron", "delete"),
    ServerState.STARTING: (),
    ServerState.RUNNING: ("terminate",),
}

# Error kinds a test may inject, by name (the name is what the state file stores).
FAULT_ERRORS: dict[str, type[ProviderError]] = {
    "out_of_stock": OutOfStock,
    "quota": QuotaExceeded,
    "invalid": InvalidRequest,
    "transient": TransientError,
}

# A worker starts in well under a second; a /health probe that takes longer means "not yet".
_HEALTH_TIMEOUT_S = 1.0
# Time a worker gets to exit on SIGTERM before SIGKILL: it closes idle keep-alive connections at once.
_STOP_GRACE_S = 3.0


def server_state(process_alive: bool, healthy: bool) -> ServerState:
    """The state of a server from its worker process: what a real cloud would report."""
    if not process_alive:
        return ServerState.STOPPED
    return ServerState.RUNNING if healthy else ServerState.STARTING


def next_slot(used: Iterable[str]) -> str:
    """The lowest free data slot ("1", "2", ...); slot "0" is the boot volume's."""
    taken = {int(slot) for slot in used}
    slot = 1
    while slot in taken:
        slot += 1
    return str(slot)


def matches_fault_target(target: str, record: dict[str, Any]) -> bool:
    return target in (record["id"], record["name"]) or target in record["tags"]


@dataclass(frozen=True, slots=True)
class _View:
    """A server as read under the lock, before the (async) health probe decides starting vs running."""

    record: dict[str, Any]
    volumes: list[dict[str, Any]]
    alive: bool

    @property
    def process(self) -> dict[str, Any] | None:
        proc: dict[str, Any] | None = self.record.get("process")
        return proc


class MockCloud(Provider):
    code = "mock"

    def __init__(
        self,
        state_dir: Path | str,
        *,
        worker_args: Sequence[str] = (),
        stop_grace_s: float = _STOP_GRACE_S,
    ) -> None:
        self.state_dir = Path(state_dir)
        self._state = StateFile(self.state_dir)
        self._worker_args = tuple(worker_args)
        self._stop_grace_s = stop_grace_s
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _tx(self, change: Callable[[Document], T], *, faults: bool = True) -> T:
        """Run `change` under the state lock in a thread; first consume an injected transient fault."""

        def run(doc: Document) -> tuple[T | None, bool]:
            if faults and doc["faults"]["transient_calls"] > 0:
                doc["faults"]["transient_calls"] -= 1
                return None, True
            return change(doc), False

        result, injected = await asyncio.to_thread(self._state.apply, run)
        if injected:
            raise TransientError("mock cloud: injected transient failure")
        return cast(T, result)

    # -- servers -----------------------------------------------------------------------------------

    async def create_server(self, spec: ServerSpec) -> Server:
        view = await self._tx(lambda doc: _create_server(doc, spec))
        return self._server(view, healthy=False)

    async def get_server(self, zone: str, server_id: str) -> Server | None:
        view = await self._tx(lambda doc: _view(doc, zone, server_id))
        if view is None:
            return None
        return self._server(view, await self._healthy(view))

    async def list_servers(self, zone: str, tags: Sequence[str]) -> list[Server]:
        wanted = set(tags)

        def read(doc: Document) -> list[_View]:
            return [
                _view_of(doc, record)
                for record in doc["servers"].values()
                if record["zone"] == zone and wanted <= set(record["tags"])
            ]

        views = await self._tx(read)
        healthy = await asyncio.gather(*(self._healthy(view) for view in views))
        return [self._server(view, ok) for view, ok in zip(views, healthy, strict=True)]

    async def power_on(self, zone: str, server_id: str) -> None:
        await self._tx(lambda doc: _power_on(doc, zone, server_id, self.state_dir, self._worker_args))

    async def terminate_server(self, zone: str, server_id: str) -> None:
        found, ref = await self._tx(lambda doc: _begin_terminate(doc, zone, server_id))
        if not found:
            return
        if ref is not None:
            await asyncio.to_thread(processes.stop, ref, self._stop_grace_s)
        await self._tx(lambda doc: _finish_terminate(doc, server_id), faults=False)

    # -- volumes -----------------------------------------------------------------------------------

    async def list_server_volumes(self, zone: str, server_id: str) -> list[AttachedVolume]:
        view = await self._tx(lambda doc: _view(doc, zone, server_id))
        if view is None:
            raise NotFound(f"mock cloud: no server {server_id} in zone {zone}")
        return [_attached(volume) for volume in view.volumes]

    async def create_volume(self, zone: str, name: str, size_bytes: int, tags: Sequence[str]) -> Volume:
        if size_bytes <= 0:
            raise InvalidRequest(f"mock cloud: volume size must be positive, not {size_bytes}")
        record = {
            "id": str(uuid.uuid4()),
            "name": name,
            "zone": zone,
            "volume_type": VOLUME_TYPE,
            "size_bytes": size_bytes,
            "tags": list(tags),
            "server_id": None,
            "slot": None,
            "created_at": _now(),
        }

        def create(doc: Document) -> None:
            doc["volumes"][record["id"]] = record

        await self._tx(create)
        return _volume(record)

    async def get_volume(self, zone: str, volume_id: str) -> Volume | None:
        record = await self._tx(lambda doc: _find_volume(doc, zone, volume_id))
        return None if record is None else _volume(record)

    async def list_volumes(self, zone: str, tags: Sequence[str]) -> list[Volume]:
        wanted = set(tags)

        def read(doc: Document) -> list[dict[str, Any]]:
            return [
                copy.deepcopy(v)
                for v in doc["volumes"].values()
                if v["zone"] == zone and (not wanted or wanted & set(v["tags"]))
            ]

        return [_volume(record) for record in await self._tx(read)]

    async def attach_volume(self, zone: str, server_id: str, volume_id: str) -> None:
        await self._tx(lambda doc: _attach(doc, zone, server_id, volume_id))

    async def detach_volume(self, zone: str, server_id: str, volume_id: str) -> None:
        await self._tx(lambda doc: _detach(doc, zone, server_id, volume_id))

    async def delete_volume(self, zone: str, volume_id: str) -> None:
        await self._tx(lambda doc: _delete_volume(doc, zone, volume_id))

    async def set_volume_tags(self, zone: str, volume_id: str, tags: Sequence[str]) -> None:
        def tag(doc: Document) -> None:
            record = _find_volume(doc, zone, volume_id, copy_out=False)
            if record is None:
                raise NotFound(f"mock cloud: no volume {volume_id} in zone {zone}")
            record["tags"] = list(tags)

        await self._tx(tag)

    # -- catalog -----------------------------------------------------------------------------------

    async def needs_boot_image(self, zone: str, commercial_type: str) -> bool:
        _check_type(commercial_type)
        return False

    async def resolve_boot_image(self, zone: str, commercial_type: str, labels: Sequence[str]) -> str | None:
        return MOCK_IMAGE if commercial_type in MOCK_TYPES else None

    async def availability(self, zone: str) -> dict[str, Availability]:
        out_of_stock = await self._tx(lambda doc: list(doc["faults"]["out_of_stock"]))
        return {t: Availability.SHORTAGE if t in out_of_stock else Availability.AVAILABLE for t in MOCK_TYPES}

    # -- faults and inspection, for tests ------------------------------------------------------------

    async def fail_power_on(self, target: str, error: str = "out_of_stock") -> None:
        """Make `power_on` of the server with this id, name or tag raise `FAULT_ERRORS[error]`."""
        if error not in FAULT_ERRORS:
            raise ValueError(f"unknown fault {error!r}; one of {', '.join(FAULT_ERRORS)}")

        def change(doc: Document) -> None:
            doc["faults"]["power_on"][target] = error

        await self._tx(change, faults=False)

    async def set_out_of_stock(self, commercial_type: str, out: bool = True) -> None:
        def change(doc: Document) -> None:
            types = set(doc["faults"]["out_of_stock"])
            types = types | {commercial_type} if out else types - {commercial_type}
            doc["faults"]["out_of_stock"] = sorted(types)

        await self._tx(change, faults=False)

    async def fail_next_calls(self, count: int) -> None:
        """The next `count` calls, from any instance on this folder, raise `TransientError`."""
        if count < 0:
            raise ValueError(f"count must be >= 0, not {count}")

        def change(doc: Document) -> None:
            doc["faults"]["transient_calls"] = count

        await self._tx(change, faults=False)

    async def clear_faults(self) -> None:
        def change(doc: Document) -> None:
            doc["faults"] = empty_document()["faults"]

        await self._tx(change, faults=False)

    async def snapshot(self) -> Document:
        """A copy of the whole state document (servers, volumes, processes, faults)."""
        return await self._tx(copy.deepcopy, faults=False)

    # -- helpers -----------------------------------------------------------------------------------

    async def _healthy(self, view: _View) -> bool:
        proc = view.process
        if not view.alive or proc is None:
            return False
        if proc.get("healthy"):
            return True
        if not await self._probe(proc["port"]):
            return False
        pid = proc["pid"]

        def remember(doc: Document) -> None:
            current = doc["servers"].get(view.record["id"], {}).get("process")
            if current is not None and current["pid"] == pid:
                current["healthy"] = True

        await self._tx(remember, faults=False)
        return True

    async def _probe(self, port: int) -> bool:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_HEALTH_TIMEOUT_S))
        try:
            async with self._http.get(f"http://{WORKER_HOST}:{port}/health") as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    @staticmethod
    def _server(view: _View, healthy: bool) -> Server:
        record = view.record
        state = server_state(view.alive, healthy)
        proc = view.process
        return Server(
            id=record["id"],
            name=record["name"],
            zone=record["zone"],
            commercial_type=record["commercial_type"],
            state=state,
            tags=tuple(record["tags"]),
            volumes=tuple(_attached(v) for v in view.volumes),
            ip_address=WORKER_HOST if state is ServerState.RUNNING else None,
            worker_port=proc["port"] if proc is not None and state is not ServerState.STOPPED else None,
            created_at=datetime.fromisoformat(record["created_at"]),
            vendor_state=state.value,
            allowed_actions=ALLOWED_ACTIONS.get(state, ()),
        )


def stop_all_workers(state_dir: Path | str, grace_s: float = 1.0) -> int:
    """Stop every worker process the mock cloud in `state_dir` started; the number that were alive."""
    state = StateFile(Path(state_dir))
    if not state.path.exists():
        return 0

    def stop(doc: Document) -> int:
        refs = {_ref(p) for p in doc["processes"]}
        refs |= {_ref(s["process"]) for s in doc["servers"].values() if s.get("process")}
        alive = [ref for ref in refs if processes.is_alive(ref)]
        for ref in alive:
            processes.stop(ref, grace_s)
        doc["processes"] = []
        return len(alive)

    return state.apply(stop)


# -- changes to the state document (run under the lock, in a thread) ----------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _ref(proc: dict[str, Any]) -> ProcessRef:
    return ProcessRef(proc["pid"], proc.get("start_time"))


def _check_type(commercial_type: str) -> None:
    if commercial_type not in MOCK_TYPES:
        raise InvalidRequest(f"mock cloud: unknown commercial type {commercial_type!r}; one of {', '.join(MOCK_TYPES)}")


def _create_server(doc: Document, spec: ServerSpec) -> _View:
    _check_type(spec.commercial_type)
    if spec.commercial_type in doc["faults"]["out_of_stock"]:
        raise OutOfStock(f"mock cloud: {spec.commercial_type} is out of stock (injected)")
    server_id = str(uuid.uuid4())
    record = {
        "id": server_id,
        "name": spec.name,
        "zone": spec.zone,
        "commercial_type": spec.commercial_type,
        "tags": list(spec.tags),
        "model": spec.model,
        "engine": spec.engine,
        # The state file is the mock cloud's user data: owner-only (mkstemp's 0600), as on a real server.
        "worker_secret": spec.worker_secret,
        "image": spec.image or MOCK_IMAGE,
        "created_at": _now(),
        "process": None,
        "terminating": False,
    }
    boot = {
        "id": str(uuid.uuid4()),
        # As on Scaleway: named after the image, and carrying none of the server's tags.
        "name": f"{record['image']}_volume_0",
        "zone": spec.zone,
        "volume_type": VOLUME_TYPE,
        "size_bytes": spec.root_volume_bytes or BOOT_VOLUME_BYTES,
        "tags": [],
        "server_id": server_id,
        "slot": "0",
        "created_at": record["created_at"],
    }
    doc["servers"][server_id] = record
    doc["volumes"][boot["id"]] = boot
    return _view_of(doc, record)


def _find_server(doc: Document, zone: str, server_id: str) -> dict[str, Any] | None:
    record: dict[str, Any] | None = doc["servers"].get(server_id)
    return record if record is not None and record["zone"] == zone else None


def _find_volume(doc: Document, zone: str, volume_id: str, *, copy_out: bool = True) -> dict[str, Any] | None:
    record: dict[str, Any] | None = doc["volumes"].get(volume_id)
    if record is None or record["zone"] != zone:
        return None
    return copy.deepcopy(record) if copy_out else record


def _view(doc: Document, zone: str, server_id: str) -> _View | None:
    record = _find_server(doc, zone, server_id)
    return None if record is None else _view_of(doc, record)


def _view_of(doc: Document, record: dict[str, Any]) -> _View:
    proc = record.get("process")
    alive = proc is not None and processes.is_alive(_ref(proc))
    volumes = sorted(
        (copy.deepcopy(v) for v in doc["volumes"].values() if v["server_id"] == record["id"]),
        key=lambda v: int(v["slot"]),
    )
    return _View(copy.deepcopy(record), volumes, alive)


def _power_on(doc: Document, zone: str, server_id: str, state_dir: Path, worker_args: Sequence[str]) -> None:
    record = _find_server(doc, zone, server_id)
    if record is None:
        raise NotFound(f"mock cloud: no server {server_id} in zone {zone}")
    if record["terminating"]:
        raise TransientError(f"mock cloud: server {server_id} is being terminated")
    for target, error in doc["faults"]["power_on"].items():
        if matches_fault_target(target, record):
            raise FAULT_ERRORS[error](f"mock cloud: power on of {server_id} refused (injected {error})")
    proc = record.get("process")
    if proc is not None and processes.is_alive(_ref(proc)):
        return
    taken = {s["process"]["port"] for s in doc["servers"].values() if s.get("process")}
    port = processes.free_port(taken)
    log = state_dir / "logs" / f"{server_id}.log"
    try:
        ref = processes.spawn_worker(port, record["model"], log, worker_args, api_key=record.get("worker_secret"))
    except OSError as exc:
        raise TransientError(f"mock cloud: cannot start the worker of {server_id}: {exc}") from exc
    entry = {"pid": ref.pid, "start_time": ref.start_time}
    record["process"] = {**entry, "port": port, "log": str(log), "healthy": False}
    # Forget processes already seen dead, so the list only grows with what may still run.
    doc["processes"] = [p for p in doc["processes"] if processes.is_alive(_ref(p))] + [entry]


def _begin_terminate(doc: Document, zone: str, server_id: str) -> tuple[bool, ProcessRef | None]:
    record = _find_server(doc, zone, server_id)
    if record is None:
        return False, None
    record["terminating"] = True
    proc = record.get("process")
    return True, None if proc is None else _ref(proc)


def _finish_terminate(doc: Document, server_id: str) -> None:
    record = doc["servers"].pop(server_id, None)
    if record is None:
        return
    for volume_id, volume in list(doc["volumes"].items()):
        if volume["server_id"] != server_id:
            continue
        if volume["slot"] == "0":
            del doc["volumes"][volume_id]
        else:
            volume["server_id"] = None
            volume["slot"] = None
    proc = record.get("process")
    if proc is not None:
        doc["processes"] = [p for p in doc["processes"] if p["pid"] != proc["pid"]]
        Path(proc["log"]).unlink(missing_ok=True)


def _attach(doc: Document, zone: str, server_id: str, volume_id: str) -> None:
    server = _find_server(doc, zone, server_id)
    if server is None:
        raise NotFound(f"mock cloud: no server {server_id} in zone {zone}")
    volume = _find_volume(doc, zone, volume_id, copy_out=False)
    if volume is None:
        raise NotFound(f"mock cloud: no volume {volume_id} in zone {zone}")
    if volume["server_id"] == server_id:
        return
    if volume["server_id"] is not None:
        raise InvalidRequest(f"mock cloud: volume {volume_id} is attached to server {volume['server_id']}")
    used = [v["slot"] for v in doc["volumes"].values() if v["server_id"] == server_id]
    volume["server_id"] = server_id
    volume["slot"] = next_slot(used)


def _detach(doc: Document, zone: str, server_id: str, volume_id: str) -> None:
    volume = _find_volume(doc, zone, volume_id, copy_out=False)
    if volume is None or volume["server_id"] is None:
        return
    if volume["server_id"] != server_id:
        raise InvalidRequest(f"mock cloud: volume {volume_id} is attached to server {volume['server_id']}")
    if volume["slot"] == "0":
        raise InvalidRequest(f"mock cloud: volume {volume_id} is the boot volume of {server_id}")
    volume["server_id"] = None
    volume["slot"] = None


def _delete_volume(doc: Document, zone: str, volume_id: str) -> None:
    volume = _find_volume(doc, zone, volume_id, copy_out=False)
    if volume is None:
        return
    if volume["server_id"] is not None:
        raise TransientError(f"mock cloud: volume {volume_id} is in use by server {volume['server_id']}")
    del doc["volumes"][volume_id]


def _attached(volume: dict[str, Any]) -> AttachedVolume:
    return AttachedVolume(
        id=volume["id"],
        slot=volume["slot"],
        volume_type=volume["volume_type"],
        size_bytes=volume["size_bytes"],
        name=volume["name"],
    )


def _volume(record: dict[str, Any]) -> Volume:
    return Volume(
        id=record["id"],
        name=record["name"],
        zone=record["zone"],
        volume_type=record["volume_type"],
        size_bytes=record["size_bytes"],
        state=VolumeState.IN_USE if record["server_id"] else VolumeState.AVAILABLE,
        tags=tuple(record["tags"]),
        server_id=record["server_id"],
        created_at=datetime.fromisoformat(record["created_at"]),
    )
