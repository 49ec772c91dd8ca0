"""Worker health: probe `/health`, `/v1/models` and the Prometheus `/metrics` of each worker.

A worker is ready when it answers and lists its model; its queue depth is vLLM's waiting + running
requests. One that stops answering keeps its traffic for a blip, loses it after N failed checks in a row
(`unhealthy`), and is `stale` once its last answer is older than the gateway's staleness limit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from scheduler.fanout import fan_out
from scheduler.runtime import Runtime
from sql.queries import fetch_all, queries

log = logging.getLogger(__name__)

# vLLM's gauges; their sum is the load the gateway balances on.
_QUEUE_GAUGES = ("vllm:num_requests_waiting", "vllm:num_requests_running")
# Probes of many workers run at once, but not so many that one poll opens hundreds of sockets.
_CONCURRENT_PROBES = 32


@dataclass(frozen=True, slots=True)
class Probe:
    answered: bool
    models: tuple[str, ...] = ()
    queue_depth: int | None = None
    error: str | None = None

    def serves(self, model: str | None) -> bool:
        """Answers and lists the model (any model, for an instance with none assigned)."""
        return self.answered and (model is None or model in self.models) and bool(self.models)

    def served_model(self, model: str | None) -> str | None:
        if model is not None and model in self.models:
            return model
        return self.models[0] if self.models else None


def parse_queue_depth(text: str) -> int | None:
    """waiting + running from a Prometheus text exposition; None when the worker exports neither."""
    total = 0.0
    seen = False
    for family in text_string_to_metric_families(text):
        if family.name in _QUEUE_GAUGES:
            for sample in family.samples:
                if sample.name == family.name:
                    total += sample.value
                    seen = True
    return max(0, round(total)) if seen else None


def parse_models(body: object) -> tuple[str, ...]:
    """Model ids from an OpenAI `/v1/models` answer; anything else lists none."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return ()
    return tuple(m["id"] for m in body["data"] if isinstance(m, dict) and isinstance(m.get("id"), str))


async def probe_worker(http: aiohttp.ClientSession, host: str, port: int, timeout_s: float) -> Probe:
    base = f"http://{host}:{port}"
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with http.get(f"{base}/health", timeout=timeout) as resp:
            if resp.status != 200:
                return Probe(False, error=f"/health answered {resp.status}")
        async with http.get(f"{base}/v1/models", timeout=timeout) as resp:
            if resp.status != 200:
                return Probe(False, error=f"/v1/models answered {resp.status}")
            models = parse_models(await resp.json(content_type=None))
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Probe(False, error=f"{type(exc).__name__}: {exc}")
    return Probe(True, models, await _queue_depth(http, base, timeout))


async def _queue_depth(http: aiohttp.ClientSession, base: str, client_timeout: aiohttp.ClientTimeout) -> int | None:
    # Metrics are a bonus: servers without vLLM's gauges (llama.cpp, SGLang) are healthy all the same.
    try:
        async with http.get(f"{base}/metrics", timeout=client_timeout) as resp:
            if resp.status != 200:
                return None
            return parse_queue_depth(await resp.text())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


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
        return WorkerHealth("ready" if probe.serves(model) else "starting", 0)
    failures = previous_failures + 1
    if heartbeat_age_s is None or heartbeat_age_s >= stale_after_s:
        return WorkerHealth("stale", failures)
    if failures >= failure_threshold:
        return WorkerHealth("unhealthy", failures)
    return WorkerHealth(previous_status, failures)


async def check_ready_workers(rt: Runtime) -> int:
    """Probe every ready instance's worker once and record the result; returns how many were probed."""
    async with rt.pool.acquire() as conn:
        rows = await fetch_all(queries.instances.list_instances_to_probe(conn))
    await fan_out(rows, partial(_check, rt), limit=_CONCURRENT_PROBES)
    return len(rows)


async def _check(rt: Runtime, row: dict[str, Any]) -> None:
    settings = rt.settings
    model: str | None = row["model_hf_repo_id"]
    probe = await probe_worker(rt.http, row["ip_address"], row["worker_port"], settings.health_timeout_s)
    health = judge(
        probe,
        model,
        previous_status=row["worker_status"],
        previous_failures=row["worker_consecutive_failures"],
        heartbeat_age_s=row["heartbeat_age_s"],
        failure_threshold=settings.worker_health_failures,
        stale_after_s=settings.worker_stale_after_s,
    )
    if health.status != row["worker_status"]:
        log.info(
            "worker status changed",
            extra={"instance_id": row["id"], "worker_status": health.status, "probe_error": probe.error},
        )
    async with rt.pool.acquire() as conn:
        await queries.instances.record_worker_probe(
            conn,
            instance_id=row["id"],
            worker_status=health.status,
            worker_model_id=probe.served_model(model),
            worker_queue_depth=probe.queue_depth,
            answered=probe.answered,
            consecutive_failures=health.consecutive_failures,
        )
    # Heartbeat, status and load are all routing fields: tell the gateways at once.
    await rt.workers_changed(str(row["id"]))
