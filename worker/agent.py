"""The worker agent (`inventiv agent`): runs beside the engine on a GPU server and pushes its state.

Every `interval_s` it asks the engine about itself on the same machine (worker.probe: health, models,
queue depth, with the worker secret), reads the GPUs with `nvidia-smi` when the machine has one, and the
data volume's usage, then POSTs it all to the gateway's `/internal/workers/heartbeat` with the same
secret. The scheduler leaves a worker whose heartbeats keep coming to its agent, and polls it again when
they stop. The boot script starts it in its own container, from a root-only env file:

    INVENTIV_AGENT_GATEWAY_URL   the gateway, as the worker reaches it
    INVENTIV_AGENT_INSTANCE_ID   this worker's instance
    INVENTIV_AGENT_SECRET        the worker secret (the engine's API key)
    INVENTIV_AGENT_ENGINE        vllm, sglang, llama_cpp or openai (which queue gauges to read)
    INVENTIV_AGENT_MODEL         the model the engine must list to be ready (unset: any)
    INVENTIV_AGENT_ENGINE_URL    the engine, default http://127.0.0.1:8000
    INVENTIV_AGENT_DATA_DIR      where the model cache lives, default /var/lib/inventiv
    INVENTIV_AGENT_INTERVAL_S    seconds between heartbeats, default 10

A failed heartbeat (gateway unreachable, a 5xx) is only logged: the next one carries the current state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from worker.engines import engine
from worker.probe import Probe, probe_worker

log = logging.getLogger(__name__)

# Each call to the engine, the gateway or nvidia-smi: well under the interval, so a hung one cannot
# make heartbeats late.
_TIMEOUT_S = 5.0
_NVIDIA_SMI_QUERY = "--query-gpu=index,utilization.gpu,memory.used,memory.total"
# The agent's own environment (its env file on the worker), apart from the installation's settings.
AGENT_ENV_NAMES = (
    "INVENTIV_AGENT_GATEWAY_URL", "INVENTIV_AGENT_INSTANCE_ID", "INVENTIV_AGENT_SECRET", "INVENTIV_AGENT_ENGINE",
    "INVENTIV_AGENT_MODEL", "INVENTIV_AGENT_ENGINE_URL", "INVENTIV_AGENT_DATA_DIR", "INVENTIV_AGENT_INTERVAL_S",
)


class AgentConfigError(ValueError):
    """A missing or bad agent setting; the message names it."""


@dataclass(frozen=True)
class AgentConfig:
    gateway_url: str
    instance_id: str
    secret: str = field(repr=False)
    engine: str = "vllm"
    model: str | None = None
    engine_url: str = "http://127.0.0.1:8000"
    data_dir: str = "/var/lib/inventiv"
    interval_s: float = 10.0
    nvidia_smi: str = "nvidia-smi"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AgentConfig:
        env = os.environ if env is None else env

        def need(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise AgentConfigError(f"{name} must be set")
            return value

        config = cls(
            gateway_url=need("INVENTIV_AGENT_GATEWAY_URL").rstrip("/"),
            instance_id=need("INVENTIV_AGENT_INSTANCE_ID"),
            secret=need("INVENTIV_AGENT_SECRET"),
            engine=env.get("INVENTIV_AGENT_ENGINE") or "vllm",
            model=env.get("INVENTIV_AGENT_MODEL") or None,
            engine_url=(env.get("INVENTIV_AGENT_ENGINE_URL") or "http://127.0.0.1:8000").rstrip("/"),
            data_dir=env.get("INVENTIV_AGENT_DATA_DIR") or "/var/lib/inventiv",
            interval_s=_positive("INVENTIV_AGENT_INTERVAL_S", env.get("INVENTIV_AGENT_INTERVAL_S") or "10"),
        )
        config.validate()
        return config

    def validate(self) -> None:
        for name, url in (("INVENTIV_AGENT_GATEWAY_URL", self.gateway_url),
                          ("INVENTIV_AGENT_ENGINE_URL", self.engine_url)):  # fmt: skip
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise AgentConfigError(f"{name} must be an http(s) URL, not {url!r}")
        try:
            uuid.UUID(self.instance_id)
            engine(self.engine)
        except ValueError as exc:
            raise AgentConfigError(f"INVENTIV_AGENT_INSTANCE_ID / INVENTIV_AGENT_ENGINE: {exc}") from None


def _positive(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise AgentConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    if value <= 0:
        raise AgentConfigError(f"{name} must be positive, not {raw!r}")
    return value


# -- what the agent measures (pure) -------------------------------------------------------------------


def parse_nvidia_smi(csv: str) -> dict[str, int | None]:
    """GPU count, mean utilisation and summed memory from `nvidia-smi --query-gpu=index,utilization.gpu,
    memory.used,memory.total --format=csv,noheader,nounits`; `[N/A]` (MIG, some models) counts as unknown."""
    rows = [[cell.strip() for cell in line.split(",")] for line in csv.splitlines() if line.strip()]
    utilisation = [_int(r[1]) for r in rows if len(r) == 4]
    used = [_int(r[2]) for r in rows if len(r) == 4]
    total = [_int(r[3]) for r in rows if len(r) == 4]
    known = [u for u in utilisation if u is not None]
    return {
        "gpu_count": len(rows),
        "gpu_utilization_pct": round(sum(known) / len(known)) if known else None,
        "gpu_memory_used_mib": sum(u for u in used if u is not None) if any(u is not None for u in used) else None,
        "gpu_memory_total_mib": sum(t for t in total if t is not None) if any(t is not None for t in total) else None,
    }


def _int(cell: str) -> int | None:
    try:
        return round(float(cell))
    except ValueError:
        return None


def disk_usage(path: str) -> dict[str, int | None]:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return {"disk_used_bytes": None, "disk_total_bytes": None}
    return {"disk_used_bytes": usage.used, "disk_total_bytes": usage.total}


def worker_status(probe: Probe, model: str | None) -> str:
    """What the agent says of its engine: ready once it serves (its) model, starting while it loads."""
    if probe.answered:
        return "ready" if probe.serves(model) else "starting"
    return "unhealthy" if probe.refused else "starting"


def heartbeat(
    config: AgentConfig, probe: Probe, gpus: dict[str, int | None], disk: dict[str, int | None]
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "instance_id": config.instance_id,
        "worker_status": worker_status(probe, config.model),
        "model_id": probe.served_model(config.model),
        "queue_depth": probe.queue_depth,
        **{k: v for k, v in {**gpus, **disk}.items() if v is not None},
    }
    return {k: v for k, v in body.items() if v is not None}


# -- doing it ------------------------------------------------------------------------------------------


async def read_gpus(nvidia_smi: str) -> dict[str, int | None]:
    """The GPUs' figures; empty when the machine has no nvidia-smi or it fails."""
    binary = shutil.which(nvidia_smi)
    if binary is None:
        return {}
    try:
        proc = await asyncio.create_subprocess_exec(
            binary, _NVIDIA_SMI_QUERY, "--format=csv,noheader,nounits",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        async with asyncio.timeout(_TIMEOUT_S):
            out, _ = await proc.communicate()
    except (OSError, TimeoutError) as exc:
        log.warning("nvidia-smi failed", extra={"error": str(exc)})
        return {}
    if proc.returncode != 0:
        log.warning("nvidia-smi failed", extra={"status": proc.returncode})
        return {}
    return parse_nvidia_smi(out.decode(errors="replace"))


class Agent:
    def __init__(self, config: AgentConfig, http: aiohttp.ClientSession) -> None:
        self.config = config
        self.http = http
        self.sent = 0

    async def beat(self) -> dict[str, Any]:
        """Measure once and send one heartbeat; returns what was sent (the gateway's answer is logged)."""
        config = self.config
        parts = urlsplit(config.engine_url)
        probe = await probe_worker(
            self.http, parts.hostname or "127.0.0.1", parts.port or 80, _TIMEOUT_S, f"Bearer {config.secret}",
            engine(config.engine).queue_gauges,
        )  # fmt: skip
        body = heartbeat(config, probe, await read_gpus(config.nvidia_smi), disk_usage(config.data_dir))
        await self._send(body)
        return body

    async def _send(self, body: dict[str, Any]) -> None:
        url = f"{self.config.gateway_url}/internal/workers/heartbeat"
        headers = {"Authorization": f"Bearer {self.config.secret}"}
        try:
            async with self.http.post(url, json=body, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=_TIMEOUT_S)) as resp:  # fmt: skip
                if resp.status != 200:
                    log.warning("heartbeat refused", extra={"status": resp.status, "answer": (await resp.text())[:300]})
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("heartbeat not delivered", extra={"error": str(exc)})
            return
        self.sent += 1

    async def run_forever(self) -> None:
        log.info("worker agent started", extra={"instance_id": self.config.instance_id, "engine": self.config.engine})
        while True:
            try:
                await self.beat()
            except Exception:
                # A bug in one measurement must not end the heartbeats.
                log.exception("heartbeat failed")
            await asyncio.sleep(self.config.interval_s)


async def run_agent(config: AgentConfig) -> int:
    async with aiohttp.ClientSession() as http:
        await Agent(config, http).run_forever()
    return 0
