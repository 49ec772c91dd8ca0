"""The ready-worker view: which instances serve which model, and which one takes the next request.

Rows come from Postgres (refreshed every second and at once when the scheduler or a heartbeat
publishes a change); eligibility is checked again at pick time, because a heartbeat goes stale
between refreshes. Load = the worker's reported queue depth + this process's requests in flight on it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inventiv.worker_secrets import WorkerSecrets


@dataclass(frozen=True, slots=True)
class Worker:
    instance_id: str
    model_id: str
    host: str
    port: int
    # The model name the worker itself reports (vLLM's --served-model-name); None: the model's repo id.
    served_model: str | None
    queue_depth: int
    heartbeat_at: float  # epoch seconds
    # The organization that deployed the instance; None: the operator's own fleet.
    organization_id: str | None = None
    # `Authorization: Bearer <worker secret>\r\n`, encoded once per refresh: the worker's engine refuses
    # requests without it. Out of the repr, so a logged worker never shows it.
    authorization: bytes = field(default=b"", repr=False, compare=False)

    @property
    def address(self) -> bytes:
        return f"{self.host}:{self.port}".encode()


def worker_from_row(row: Mapping[str, Any], secrets: WorkerSecrets) -> Worker:
    instance_id = str(row["id"])
    return Worker(
        instance_id=instance_id,
        model_id=str(row["model_id"]),
        host=row["ip_address"],
        port=int(row["worker_port"]),
        served_model=row["worker_model_id"] or None,
        queue_depth=int(row["worker_queue_depth"] or 0),
        heartbeat_at=float(row["heartbeat_at"] or 0.0),
        organization_id=str(row["organization_id"]) if row.get("organization_id") else None,
        authorization=b"Authorization: %s\r\n" % secrets.authorization(instance_id).encode(),
    )


def shows_instance(worker: Worker, organization_id: str, is_admin: bool) -> bool:
    """Whether a key may learn which instance answered it (`X-Inventiv-Instance`).

    The same rule as the control API's instance views (gateway/control/access.py): every key of the
    organization that deployed the instance, and admin keys for the operator's instances (no
    organization). Another tenant sharing the model never sees the id.
    """
    if worker.organization_id is None:
        return is_admin
    return worker.organization_id == organization_id


def choose(candidates: Sequence[Worker], in_flight: Mapping[str, int], rng: random.Random) -> Worker | None:
    """The least loaded candidate; ties broken at random so equal workers share the load."""
    best: list[Worker] = []
    best_load = 0
    for worker in candidates:
        load = worker.queue_depth + in_flight.get(worker.instance_id, 0)
        if not best or load < best_load:
            best, best_load = [worker], load
        elif load == best_load:
            best.append(worker)
    if not best:
        return None
    return best[0] if len(best) == 1 else rng.choice(best)


class WorkerView:
    def __init__(self, stale_after_s: float, rng: random.Random | None = None) -> None:
        self.stale_after_s = stale_after_s
        self.by_model: dict[str, list[Worker]] = {}
        self.by_id: dict[str, Worker] = {}
        # Survives refreshes: a request in flight is counted until it ends, whatever the table says.
        self.in_flight: dict[str, int] = {}
        self._rng = rng or random.Random()

    def replace(self, workers: Iterable[Worker]) -> set[str]:
        """Swap in a new table; returns the instance ids that left it."""
        by_id = {w.instance_id: w for w in workers}
        by_model: dict[str, list[Worker]] = {}
        for worker in by_id.values():
            by_model.setdefault(worker.model_id, []).append(worker)
        gone = set(self.by_id) - set(by_id)
        self.by_id, self.by_model = by_id, by_model
        return gone

    def _fresh(self, worker: Worker, now: float) -> bool:
        return now - worker.heartbeat_at <= self.stale_after_s

    def eligible(self, instance_id: str, model_id: str, now: float) -> Worker | None:
        worker = self.by_id.get(instance_id)
        if worker is None or worker.model_id != model_id or not self._fresh(worker, now):
            return None
        return worker

    def pick(self, model_id: str, now: float, exclude: str | None = None) -> Worker | None:
        candidates = [
            w for w in self.by_model.get(model_id, ()) if w.instance_id != exclude and self._fresh(w, now)
        ]
        return choose(candidates, self.in_flight, self._rng)

    def model_ids(self, now: float) -> set[str]:
        """Models with at least one eligible worker."""
        return {m for m, workers in self.by_model.items() if any(self._fresh(w, now) for w in workers)}

    def acquire(self, worker: Worker) -> None:
        self.in_flight[worker.instance_id] = self.in_flight.get(worker.instance_id, 0) + 1

    def release(self, worker: Worker) -> None:
        left = self.in_flight.get(worker.instance_id, 0) - 1
        if left > 0:
            self.in_flight[worker.instance_id] = left
        else:
            self.in_flight.pop(worker.instance_id, None)
