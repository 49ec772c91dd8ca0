"""Asking an engine about itself: does it answer, which models it serves, how long its queue is.

Every request carries the worker's secret (`Authorization: Bearer`), as the gateway's do: `/health`,
then `/v1/models` (protected on vLLM and SGLang, open on llama.cpp), then the Prometheus `/metrics`
(protected on llama.cpp), whose engine gauges sum to the queue depth (`worker.engines`). The scheduler
probes workers from outside; the worker agent probes its engine from the same machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from worker.engines import DEFAULT_ENGINE, ENGINES, queue_depth

# A worker answering these refused our secret.
_REFUSED = (401, 403)


@dataclass(frozen=True, slots=True)
class Probe:
    answered: bool
    models: tuple[str, ...] = ()
    queue_depth: int | None = None
    error: str | None = None
    # The worker answered, but refused the secret.
    refused: bool = False

    def serves(self, model: str | None) -> bool:
        """Answers and lists the model (any model, for an instance with none assigned)."""
        return self.answered and (model is None or model in self.models) and bool(self.models)

    def served_model(self, model: str | None) -> str | None:
        if model is not None and model in self.models:
            return model
        return self.models[0] if self.models else None


def parse_models(body: object) -> tuple[str, ...]:
    """Model ids from an OpenAI `/v1/models` answer; anything else lists none."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return ()
    return tuple(m["id"] for m in body["data"] if isinstance(m, dict) and isinstance(m.get("id"), str))


async def probe_worker(
    http: aiohttp.ClientSession,
    host: str,
    port: int,
    timeout_s: float,
    authorization: str,
    gauges: tuple[str, ...] = ENGINES[DEFAULT_ENGINE].queue_gauges,
) -> Probe:
    base = f"http://{host}:{port}"
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    headers = {"Authorization": authorization}
    try:
        async with http.get(f"{base}/health", timeout=timeout, headers=headers) as resp:
            if resp.status != 200:
                return _refused(resp.status, "/health")
        async with http.get(f"{base}/v1/models", timeout=timeout, headers=headers) as resp:
            if resp.status != 200:
                return _refused(resp.status, "/v1/models")
            models = parse_models(await resp.json(content_type=None))
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Probe(False, error=f"{type(exc).__name__}: {exc}")
    return Probe(True, models, await _queue_depth(http, base, timeout, headers, gauges))


def _refused(status: int, path: str) -> Probe:
    refused = status in _REFUSED
    error = f"{path} answered {status}" + (": the worker refused its secret" if refused else "")
    return Probe(False, error=error, refused=refused)


async def _queue_depth(
    http: aiohttp.ClientSession, base: str, client_timeout: aiohttp.ClientTimeout, headers: dict[str, str],
    gauges: tuple[str, ...],
) -> int | None:  # fmt: skip
    # Metrics are a bonus: a server without queue gauges is healthy all the same.
    try:
        async with http.get(f"{base}/metrics", timeout=client_timeout, headers=headers) as resp:
            if resp.status != 200:
                return None
            return queue_depth(await resp.text(), gauges)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


