"""Everything a run measures, started and stopped together.

CPU 0: the mock workers, the load driver and this orchestrator. CPU 1: the gateway (one process) and
the peer routers, idle but for the one under load, so every proxy gets the same core. Three mock
workers, each serving one model of the demo catalog: `fast` (no delay: max throughput), `paced`
(20 ms per token: TTFT) and `slow` (streams that stay open while memory is sampled). sglang-router
routes to one worker per process, so it runs once per worker.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from benchmarks import peer
from benchmarks.loadgen import Endpoint, build_request
from benchmarks.processes import LOOPBACK, Started, free_port, get_request, start, stop, wait_ready
from benchmarks.services import BenchServices, bench_services, prepare_database

LOAD_CPU = 0
PROXY_CPU = 1
DIRECT, GATEWAY, PEER = "direct", "gateway", peer.NAME
# The benchmark runs no scheduler to refresh heartbeats; the gateway must not find them stale mid-run.
_STALE_AFTER_S = 86_400


@dataclass(frozen=True)
class WorkerSpec:
    role: str
    model: str
    token_delay_ms: float
    # Completion tokens of a request without max_tokens (the non-streaming runs): a short answer.
    tokens: int = 16


def worker_specs(paced_delay_ms: float, slow_delay_ms: float) -> tuple[WorkerSpec, ...]:
    return (
        WorkerSpec("fast", "Qwen/Qwen2.5-0.5B-Instruct", 0.0),
        WorkerSpec("paced", "Qwen/Qwen2.5-7B-Instruct", paced_delay_ms),
        WorkerSpec("slow", "Qwen/Qwen2.5-14B-Instruct", slow_delay_ms),
    )


@dataclass(frozen=True)
class Target:
    """Where the load goes, the process charged for it (None: nothing between driver and worker),
    and the worker behind it, whose counters say what reached it."""

    name: str
    endpoint: Endpoint
    pid: int | None
    worker: Endpoint


@dataclass
class Stack:
    specs: dict[str, WorkerSpec]
    workers: dict[str, Endpoint]
    gateway: Started
    gateway_endpoint: Endpoint
    # The same gateway logging one access line per request (INFO), to measure what the line costs.
    logged_gateway: Started
    logged_endpoint: Endpoint
    peers: dict[str, tuple[Started, Endpoint]]
    api_key: str
    run_dir: Path

    def targets(self, role: str) -> list[Target]:
        worker = self.workers[role]
        found = [
            Target(DIRECT, worker, None, worker),
            Target(GATEWAY, self.gateway_endpoint, self.gateway.pid, worker),
        ]
        if role in self.peers:
            started, endpoint = self.peers[role]
            found.append(Target(PEER, endpoint, started.pid, worker))
        return found

    def logged_target(self, role: str) -> Target:
        return Target(GATEWAY, self.logged_endpoint, self.logged_gateway.pid, self.workers[role])


def chat_body(model: str, *, stream: bool, max_tokens: int | None = None, include_usage: bool = False) -> bytes:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": "Say hello."}]}
    if stream:
        body["stream"] = True
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def gateway_env(services: BenchServices, run_dir: Path) -> dict[str, str]:
    """The environment of a benchmarked gateway: the run's database and Redis prefix, warnings only."""
    return {
        **os.environ,
        **services.gateway_env(),
        "INVENTIV_LOG_LEVEL": "WARNING",
        "INVENTIV_DATA_DIR": str(run_dir / "gateway-data"),
        "INVENTIV_WORKER_STALE_AFTER_S": str(_STALE_AFTER_S),
        "INVENTIV_WORKER_SECRET_KEY": secrets.token_urlsafe(48),
    }


@asynccontextmanager
async def running_stack(run_dir: Path, specs: tuple[WorkerSpec, ...], peer_binary: Path | None) -> AsyncIterator[Stack]:
    async with AsyncExitStack() as exits:
        services = await exits.enter_async_context(bench_services(run_dir))
        workers: dict[str, Endpoint] = {}
        for spec in specs:
            workers[spec.role] = await start_worker(exits, spec, run_dir)
        api_key, _ = await prepare_database(
            services.database_url, {spec.model: (LOOPBACK, workers[spec.role].port) for spec in specs}
        )
        env = gateway_env(services, run_dir)
        gateway, endpoint = await start_gateway(exits, "gateway", env, run_dir, api_key, specs)
        logged_env = {**env, "INVENTIV_LOG_LEVEL": "INFO", "INVENTIV_LOG_FORMAT": "json"}
        logged, logged_endpoint = await start_gateway(exits, "gateway-logged", logged_env, run_dir, api_key, specs)
        peers = {}
        if peer_binary is not None:
            for spec in specs:
                peers[spec.role] = await _start_peer(exits, peer_binary, spec, workers[spec.role], run_dir)
        yield Stack({s.role: s for s in specs}, workers, gateway, endpoint, logged, logged_endpoint, peers, api_key,
                    run_dir)  # fmt: skip


async def start_gateway(
    exits: AsyncExitStack, name: str, env: dict[str, str], run_dir: Path, api_key: str, specs: tuple[WorkerSpec, ...]
) -> tuple[Started, Endpoint]:
    endpoint = Endpoint(LOOPBACK, free_port())
    argv = [sys.executable, "-m", "inventiv", "gateway", "--workers", "1", "--port", str(endpoint.port)]
    gateway = await start(name, argv, cpu=PROXY_CPU, log_dir=run_dir, env=env, cwd=run_dir)
    exits.push_async_callback(stop, gateway)
    await wait_ready(gateway, endpoint, get_request(endpoint, "/readyz"))
    for spec in specs:
        body = chat_body(spec.model, stream=False, max_tokens=1)
        headers = {"Authorization": f"Bearer {api_key}"}
        await wait_ready(gateway, endpoint, build_request("POST", endpoint, "/v1/chat/completions", body, headers))
    return gateway, endpoint


async def start_worker(exits: AsyncExitStack, spec: WorkerSpec, run_dir: Path) -> Endpoint:
    endpoint = Endpoint(LOOPBACK, free_port())
    argv = [
        sys.executable, "-m", "providers.mock.worker", "--port", str(endpoint.port), "--model", spec.model,
        "--tokens", str(spec.tokens), "--token-delay-ms", str(spec.token_delay_ms),
    ]  # fmt: skip
    started = await start(f"worker-{spec.role}", argv, cpu=LOAD_CPU, log_dir=run_dir, cwd=run_dir)
    exits.push_async_callback(stop, started)
    await wait_ready(started, endpoint, get_request(endpoint, "/health"))
    return endpoint


async def _start_peer(
    exits: AsyncExitStack, binary: Path, spec: WorkerSpec, worker: Endpoint, run_dir: Path
) -> tuple[Started, Endpoint]:
    endpoint = Endpoint(LOOPBACK, free_port())
    argv = peer.launch_argv(binary, endpoint.port, f"http://{worker.host}:{worker.port}", free_port())
    # Offline: it would otherwise try to fetch a tokenizer named after the model at start.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = await start(f"{peer.NAME}-{spec.role}", argv, cpu=PROXY_CPU, log_dir=run_dir, env=env, cwd=run_dir)
    exits.push_async_callback(stop, started)
    body = chat_body(spec.model, stream=False, max_tokens=1)
    await wait_ready(started, endpoint, build_request("POST", endpoint, "/v1/chat/completions", body))
    return started, endpoint
