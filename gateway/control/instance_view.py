"""How an instance looks in the API: its row, its storage summary and, in detail, every volume.

Pure functions over query rows, shared by POST /deployments, GET /instances and GET /instances/{id}.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from providers.base import GB

_FIELDS = (
    "id", "status", "organization_id", "provider_id", "provider_code", "zone_id", "zone_code", "instance_type_id",
    "instance_type_code", "model_id", "provider_instance_id", "provider_instance_name", "ip_address", "worker_port",
    "worker_status", "worker_model_id", "worker_queue_depth", "worker_last_heartbeat_at",
    "worker_consecutive_failures", "engine", "agent_heartbeat_at", "worker_telemetry", "data_volume_gb",
    "data_volume_delete_on_terminate", "error_code", "error_message", "provisioning_deadline_at", "created_at",
    "updated_at", "ready_at", "terminating_at", "terminated_at",
    "replace_on_failure", "replaces_instance_id",
)
_VOLUME_FIELDS = (
    "id", "provider_volume_id", "name", "volume_type", "size_bytes", "slot", "is_boot", "delete_on_terminate",
    "created_at", "attached_at", "detached_at", "deleted_at",
)


def size_gb(size_bytes: int | None) -> int | None:
    """Bytes to GB (10**9, as clouds bill), rounded half up; None when the size is not known."""
    return None if size_bytes is None else (size_bytes + GB // 2) // GB


def storage_summary(volumes: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """`storage_count` and `storage_sizes_gb` over the volumes not deleted yet."""
    live = [v for v in volumes if v["deleted_at"] is None]
    return {"storage_count": len(live), "storage_sizes_gb": [size_gb(v["size_bytes"]) for v in live]}


def worker_url(row: dict[str, Any]) -> str | None:
    if not row["ip_address"] or not row["worker_port"]:
        return None
    host = row["ip_address"]
    # IPv6 literals need brackets in a URL.
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{row['worker_port']}"


def instance_summary(row: dict[str, Any], volumes: Iterable[dict[str, Any]]) -> dict[str, Any]:
    out = {name: row[name] for name in _FIELDS}
    out["object"] = "instance"
    out["model"] = row["model_hf_repo_id"]
    out["worker_url"] = worker_url(row)
    out.update(storage_summary(volumes))
    return out


def instance_detail(row: dict[str, Any], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    out = instance_summary(row, volumes)
    out["storages"] = [volume_view(v) for v in volumes]
    return out


def volume_view(volume: dict[str, Any]) -> dict[str, Any]:
    out = {name: volume[name] for name in _VOLUME_FIELDS}
    out["size_gb"] = size_gb(volume["size_bytes"])
    return out


def group_by_instance(volumes: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for volume in volumes:
        grouped.setdefault(str(volume["instance_id"]), []).append(volume)
    return grouped
