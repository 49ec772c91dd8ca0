"""Worker health: probe `/health`, `/v1/models` and the Prometheus `/metrics` of each worker.

Every probe carries the worker's secret (`Authorization: Bearer`), as the gateway's requests do. A worker
is ready when it answers and lists its model; its queue depth is the sum of its engine's queue gauges
(`worker.engines`). One that stops answering keeps its traffic for a blip, loses it after N failed checks
in a row (`unhealthy`), and is `stale` once its last answer is older than the gateway's staleness limit.
One that refuses the secret (401/403: a worker not started with it, or another installation's) is
`unhealthy` at once: the gateway's requests would be refused too. A worker whose agent pushes heartbeats
(worker/agent.py) is left to it, and polled again once three of them are missed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, Self

from inventiv.statuses import WorkerStatus
from scheduler.fanout import fan_out
from scheduler.runtime import Runtime
from sql.queries import fetch_all, queries
from worker.engines import engine
from worker.probe import Probe, probe_worker

log = logging.getLogger(__name__)

# Probes of many workers run at once, but not so many that one poll opens hundreds of sockets.
_CONCURRENT_PROBES = 32
# A worker whose agent missed this many heartbeats in a row is polled again.
_MISSED_BEATS = 3


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """A ready worker the health job probes: one row of list-instances-to-probe."""

    id: str
    ip_address: str
    worker_port: int
    model_hf_repo_id: str | None
    engine: str
    worker_status: str
    worker_consecutive_failures: int
    # Seconds since the worker last answered; None when it never has.
    heartbeat_age_s: float | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        values = {f.name: row[f.name] for f in fields(cls)}
        return cls(**{**values, "id": str(values["id"])})


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    status: str
    consecutive_failures: int


def judge(
    probe: Probe,
    model: str | None,
    *,
    previous_status: str,
    previous_failures: int,
    heartbeat_age_s: float | None,
    failure_threshold: int,
    stale_after_s: float,
) -> WorkerHealth:
    """The worker's status after this probe."""
    if probe.answered:
        return WorkerHealth(WorkerStatus.READY if probe.serves(model) else WorkerStatus.STARTING, 0)
    failures = previous_failures + 1
    if probe.refused:
        return WorkerHealth(WorkerStatus.UNHEALTHY, failures)
    if heartbeat_age_s is None or heartbeat_age_s >= stale_after_s:
        return WorkerHealth(WorkerStatus.STALE, failures)
    if failures >= failure_threshold:
        return WorkerHealth(WorkerStatus.UNHEALTHY, failures)
    return WorkerHealth(previous_status, failures)


async def check_ready_workers(rt: Runtime) -> int:
    """Probe every ready instance's worker once and record the result; returns how many were probed."""
    async with rt.pool.acquire() as conn:
        rows = await fetch_all(
            queries.instances.list_instances_to_probe(conn, agent_fresh_s=rt.settings.agent_interval_s * _MISSED_BEATS)
        )
    await fan_out([ProbeTarget.from_row(row) for row in rows], partial(_check, rt), limit=_CONCURRENT_PROBES)
    return len(rows)


async def _check(rt: Runtime, target: ProbeTarget) -> None:
    settings = rt.settings
    model = target.model_hf_repo_id
    probe = await probe_worker(
        rt.http, target.ip_address, target.worker_port, settings.health_timeout_s,
        rt.secrets.authorization(target.id), engine(target.engine).queue_gauges,
    )  # fmt: skip
    health = judge(
        probe,
        model,
        previous_status=target.worker_status,
        previous_failures=target.worker_consecutive_failures,
        heartbeat_age_s=target.heartbeat_age_s,
        failure_threshold=settings.worker_health_failures,
        stale_after_s=settings.worker_stale_after_s,
    )
    if health.status != target.worker_status:
        log.info(
            "worker status changed",
            extra={"instance_id": target.id, "worker_status": health.status, "probe_error": probe.error},
        )
    async with rt.pool.acquire() as conn:
        await queries.instances.record_worker_probe(
            conn,
            instance_id=target.id,
            worker_status=health.status,
            worker_model_id=probe.served_model(model),
            worker_queue_depth=probe.queue_depth,
            answered=probe.answered,
            consecutive_failures=health.consecutive_failures,
        )
    # Heartbeat, status and load are all routing fields: tell the gateways at once.
    await rt.workers_changed(target.id)
