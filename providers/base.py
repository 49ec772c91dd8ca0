"""The cloud provider interface: what the scheduler may ask of a cloud, in our own types.

One implementation per cloud (`providers/scaleway`, `providers/mock`), built by `providers.registry`.
Every method is idempotent where the cloud allows it, and every failure is one of the `ProviderError`
leaves below, so the scheduler decides retry / fail / clean up from the error's class alone.

Conventions:
- Sizes are bytes (`GB` = 10**9 bytes, as clouds bill them).
- `get_*` returns None for a resource that does not exist (404), never raises `NotFound`.
- `delete_*` / `terminate_server` treat a resource already gone as done.
- Tags are exact strings; servers and volumes created by the scheduler carry the deployment tag and
  `instance=<instance id>`, so they can be found again after a crash and swept when orphaned.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

GB = 10**9


class ServerState(enum.StrEnum):
    """Our server lifecycle; each provider maps its vendor states here through one explicit table."""

    STOPPED = "stopped"  # created or powered off; not billed for GPU on most clouds, volumes kept
    STARTING = "starting"  # powering on (allocating / provisioning node)
    RUNNING = "running"
    STOPPING = "stopping"
    LOCKED = "locked"  # the cloud froze it (abuse, billing); no action possible
    ERROR = "error"  # a state the cloud reports but we cannot act on
    UNKNOWN = "unknown"  # a vendor state the table does not know yet: treated like ERROR, logged


class VolumeState(enum.StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"  # detached, deletable
    IN_USE = "in_use"  # attached to a server
    DELETING = "deleting"
    DELETED = "deleted"
    ERROR = "error"
    BUSY = "busy"  # resizing, snapshotting, locked, updating: wait
    UNKNOWN = "unknown"


class Availability(enum.StrEnum):
    AVAILABLE = "available"
    SCARCE = "scarce"
    SHORTAGE = "shortage"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class AttachedVolume:
    """A volume as a server lists it."""

    id: str
    slot: str  # "0" is the root volume, whatever the cloud's boot flag says
    volume_type: str  # vendor type: sbs_volume, l_ssd, scratch, mock_block, ...
    size_bytes: int | None = None  # None where the server listing does not say (Scaleway sbs)
    name: str | None = None

    @property
    def is_root(self) -> bool:
        return self.slot == "0"


@dataclass(frozen=True, slots=True)
class Server:
    id: str
    name: str
    zone: str
    commercial_type: str
    state: ServerState
    tags: tuple[str, ...] = ()
    volumes: tuple[AttachedVolume, ...] = ()
    # The address the worker is reached at (public or private, whichever the cloud gives); None until booted.
    ip_address: str | None = None
    # The port the worker listens on, where the cloud decides it (the mock cloud's local processes);
    # None: the instance type's worker_port.
    worker_port: int | None = None
    created_at: datetime | None = None
    # The vendor's own state string, for logs and error messages.
    vendor_state: str = ""
    allowed_actions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Volume:
    id: str
    name: str
    zone: str
    volume_type: str
    size_bytes: int | None
    state: VolumeState
    tags: tuple[str, ...] = ()
    # The server it is attached (or attaching) to, if any.
    server_id: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Firewall:
    """A firewall the provider made for this installation's workers (Scaleway: a security group)."""

    id: str
    name: str
    zone: str
    tags: tuple[str, ...] = ()
    # Servers it applies to: a firewall some server still uses cannot be deleted.
    server_ids: tuple[str, ...] = ()
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """What `create_server` is asked for."""

    name: str
    zone: str
    commercial_type: str
    tags: tuple[str, ...]
    # Image id (or label); None lets the provider use its default for the type.
    image: str | None = None
    # Size of the root volume when the cloud lets us choose it; None: the image's default.
    root_volume_bytes: int | None = None
    # Model the mock cloud's worker serves; real clouds pass it to the worker through user data or ignore it.
    model: str | None = None
    # The inference engine that serves it (worker/engines.py).
    engine: str = "vllm"
    # The worker's secret (inventiv/worker_secrets.py): its engine's API key, given to the server in a way
    # only root on it can read. Never logged, hence out of the repr.
    worker_secret: str | None = field(default=None, repr=False)


# -- errors ------------------------------------------------------------------------------------------


class ProviderError(Exception):
    """Base of every provider failure. `code` is stable and goes into action_logs.error_code."""

    code = "PROVIDER_ERROR"
    retryable = False
    # Set on a failed non-idempotent call (a create) that the cloud may have carried out all the same.
    may_have_run = False

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status


class NotFound(ProviderError, LookupError):
    code = "PROVIDER_NOT_FOUND"


class QuotaExceeded(ProviderError):
    code = "PROVIDER_QUOTA_EXCEEDED"


class OutOfStock(ProviderError):
    code = "PROVIDER_OUT_OF_STOCK"


class InvalidRequest(ProviderError, ValueError):
    code = "PROVIDER_INVALID_REQUEST"


class AuthError(ProviderError, PermissionError):
    code = "PROVIDER_AUTH"


class TransientError(ProviderError):
    """Worth retrying after a backoff: 429, 5xx, connection errors, `transient_state`, `locked`."""

    code = "PROVIDER_TRANSIENT"
    retryable = True


class NotReady(TransientError):
    """The resource is changing state (a volume still being created): the same call works shortly."""

    code = "PROVIDER_NOT_READY"


class ProviderTimeout(TransientError, TimeoutError):
    code = "PROVIDER_TIMEOUT"


# -- the interface -----------------------------------------------------------------------------------


class Provider(abc.ABC):
    """A cloud. Implementations hold their HTTP session (or local state) and are closed with `close()`."""

    #: matches providers.code in the database
    code: str

    # servers
    @abc.abstractmethod
    async def create_server(self, spec: ServerSpec) -> Server:
        """Create the server, stopped. Its volumes (root included) are listed in the result."""

    @abc.abstractmethod
    async def get_server(self, zone: str, server_id: str) -> Server | None:
        """The server, or None if it does not exist."""

    @abc.abstractmethod
    async def list_servers(self, zone: str, tags: Sequence[str]) -> list[Server]:
        """Servers carrying every one of `tags` (all pages)."""

    @abc.abstractmethod
    async def power_on(self, zone: str, server_id: str) -> None:
        """Ask the server to start; returns once the cloud accepted it (poll `get_server` for RUNNING)."""

    @abc.abstractmethod
    async def terminate_server(self, zone: str, server_id: str) -> None:
        """Make the server go away, whatever its state: terminate a running one, delete a stopped one.

        Volumes the cloud keeps (Scaleway keeps sbs volumes) are left detached: the caller deletes
        those it should. A server already gone is done.
        """

    # volumes
    @abc.abstractmethod
    async def list_server_volumes(self, zone: str, server_id: str) -> list[AttachedVolume]:
        """Every volume attached to the server, sizes filled in (asking the volume API where needed)."""

    @abc.abstractmethod
    async def create_volume(self, zone: str, name: str, size_bytes: int, tags: Sequence[str]) -> Volume:
        """A new data volume, detached."""

    @abc.abstractmethod
    async def get_volume(self, zone: str, volume_id: str) -> Volume | None:
        """The volume, or None if it does not exist."""

    @abc.abstractmethod
    async def list_volumes(self, zone: str, tags: Sequence[str]) -> list[Volume]:
        """Volumes carrying ANY of `tags` (all pages); the caller filters further."""

    @abc.abstractmethod
    async def attach_volume(self, zone: str, server_id: str, volume_id: str) -> None:
        """Attach; already attached to this server is done. A volume that does not exist raises NotFound,
        one not yet usable (still being created) NotReady."""

    @abc.abstractmethod
    async def detach_volume(self, zone: str, server_id: str, volume_id: str) -> None:
        """Detach; already detached is done."""

    @abc.abstractmethod
    async def delete_volume(self, zone: str, volume_id: str) -> None:
        """Delete a detached volume; already gone is done. Raises TransientError while it is in use."""

    @abc.abstractmethod
    async def set_volume_tags(self, zone: str, volume_id: str, tags: Sequence[str]) -> None:
        """Replace the volume's tags (Scaleway does not copy server tags onto the boot volume)."""

    # catalog
    @abc.abstractmethod
    async def needs_boot_image(self, zone: str, commercial_type: str) -> bool:
        """True when the type has no local disk and must boot from a block-volume image."""

    @abc.abstractmethod
    async def resolve_boot_image(self, zone: str, commercial_type: str, labels: Sequence[str]) -> str | None:
        """The id of an image that can boot this type, trying `labels` in order (none: the provider's own
        default labels); None if nothing fits."""

    @abc.abstractmethod
    async def availability(self, zone: str) -> dict[str, Availability]:
        """Stock per commercial type in the zone."""

    # firewalls: optional, for clouds where the provider makes one (the others have none to sweep)
    async def list_firewalls(self, zone: str, tags: Sequence[str]) -> list[Firewall]:
        """Firewalls carrying every one of `tags` (all pages)."""
        return []

    async def delete_firewall(self, zone: str, firewall_id: str) -> None:  # noqa: B027 - nothing to delete
        """Delete a firewall no server uses; already gone is done. Raises TransientError while a server uses it."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing to close
        """Release connections; the default holds none."""
