"""An instance as the scheduler's steps see it: its row, its catalog entries and its tracked volumes."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import aiopg

from inventiv.settings import Settings
from inventiv.statuses import InstanceStatus
from scheduler.naming import data_volume_name
from scheduler.pacing import wait_delay_s
from scheduler.volumes import TrackedVolume, data_volume_gb
from sql.queries import queries

PROVISIONING_STATUSES = (InstanceStatus.PROVISIONING, InstanceStatus.BOOTING)
RELEASE_STATUSES = (InstanceStatus.TERMINATING, InstanceStatus.FAILED)

# Steps one pass may take before it hands the instance back: a whole provisioning is about eight, so this
# only stops a pass that makes no progress from spinning.
MAX_STEPS_PER_PASS = 16


@dataclass(frozen=True, slots=True)
class Pass:
    """How a pass left the instance: the status it expects the row to be in, and when to look again.

    `waiting`: it stopped to wait on the cloud or the worker (polled less often the longer that lasts);
    `stepped`: it took at least one step first, so whatever it now waits for is a new wait.
    """

    status: str
    delay_s: float
    waiting: bool = False
    stepped: bool = False


@dataclass(frozen=True, slots=True)
class InstanceWork:
    id: str
    status: str
    provider_code: str
    provider_active: bool
    zone_code: str
    zone_active: bool
    instance_type_id: str
    instance_type_code: str
    type_active: bool
    allocation_params: dict[str, Any]
    type_worker_port: int
    type_offered_in_zone: bool
    model_id: str | None
    model_hf_repo_id: str | None
    model_active: bool | None
    engine: str
    model_data_volume_gb: int | None
    model_parameter_count: int | None
    provider_data_volume_gb_default: int | None
    boot_image_labels: list[str]
    provider_instance_id: str | None
    ip_address: str | None
    worker_port: int | None
    data_volume_gb: int | None
    data_volume_delete_on_terminate: bool
    attempts: int
    deleted_at: Any
    # Seconds since the instance began waiting on the cloud or its worker; None when it is not waiting.
    waited_s: float | None
    deadline_passed: bool
    volumes: tuple[TrackedVolume, ...] = ()

    @property
    def live_volumes(self) -> list[TrackedVolume]:
        return [v for v in self.volumes if v.deleted_at is None]

    @property
    def boot_volume_tracked(self) -> bool:
        return any(v.is_boot for v in self.live_volumes)

    @property
    def data_volume(self) -> TrackedVolume | None:
        name = data_volume_name(self.id)
        return next((v for v in self.live_volumes if v.name == name and not v.is_boot), None)

    def wait_delay_s(self, settings: Settings, *, stepped: bool) -> float:
        """When to look again at a wait: a wait that begins now (after a step) is polled from scratch."""
        waited = None if stepped else self.waited_s
        return wait_delay_s(waited, settings.scheduler_tick_s, settings.scheduler_poll_max_s)

    def planned_data_volume_gb(self, settings: Settings) -> int:
        return data_volume_gb(
            forced=settings.worker_data_volume_gb,
            requested=self.data_volume_gb,
            model_gb=self.model_data_volume_gb,
            provider_default=self.provider_data_volume_gb_default,
            parameter_count=self.model_parameter_count,
        )


_ROW_FIELDS = tuple(f.name for f in fields(InstanceWork) if f.name != "volumes")


async def load_work(pool: aiopg.Pool, settings: Settings, instance_id: str) -> InstanceWork | None:
    async with pool.acquire() as conn:
        row = await queries.instances.get_instance_for_scheduler(
            conn, instance_id=instance_id, default_deadline_s=settings.provisioning_deadline_s
        )
    if row is None:
        return None
    values = {name: row[name] for name in _ROW_FIELDS}
    values["id"] = str(values["id"])
    return InstanceWork(**values, volumes=tuple(TrackedVolume.from_row(_volume(v)) for v in row["volumes"]))


def _volume(entry: dict[str, Any]) -> dict[str, Any]:
    """A tracked volume of the row's JSON array, its times back to datetimes (JSON has them as text)."""
    return {k: datetime.fromisoformat(v) if k in _TIMES and v is not None else v for k, v in entry.items()}


_TIMES = ("attached_at", "detached_at", "deleted_at")
