"""Everything a run measures, started and stopped together.

CPU 0: the mock workers, the static upstream, the load driver and this orchestrator. CPU 1: the
gateway (one process) and the peers (routers, nginx as a proxy), idle but for the one under load, so
every proxy gets the same core. Three mock workers, each serving one model of the demo catalog: `fast` (no delay: max
throughput), `paced` (20 ms per token: TTFT) and `slow` (streams that stay open while memory is
sampled); and, when nginx is installed, the `static` upstream (benchmarks/static_upstream.py), a
worker of a model of its own in the benchmark's database. A peer routes to one worker per process,
so each peer runs once per worker.
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
import redis.asyncio as aioredis

from benchmarks import compiled, nginx_proxy, static_upstream
from benchmarks.loadgen import Endpoint, build_request, fetch
from benchmarks.peer import Peer
from benchmarks.processes import LOOPBACK, ProcessFailed, Started, free_port, get_request, start, stop, wait_ready
from benchmarks.services import BenchServices, bench_services, prepare_database
from inventiv import redis_keys

LOAD_CPU = 0
PROXY_CPU = 1
DIRECT, GATEWAY = "direct", "gateway"
# The role of nginx beside the mock workers' roles.
STATIC = "static"
# What counts the requests that reached a target's upstream: the mock worker or nginx's stub_status.
MOCK, NGINX = "mock", "nginx"
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
    counted_by: str = MOCK


@dataclass
class Stack:
    specs: dict[str, WorkerSpec]
    workers: dict[str, Endpoint]
    gateway: Started
    gateway_endpoint: Endpoint
    # The same gateway logging one access line per request (INFO), to measure what the line costs.
    logged_gateway: Started
    logged_endpoint: Endpoint
    # Peer name -> role -> its router for that role's worker.
    peers: dict[str, dict[str, tuple[Started, Endpoint]]]
    api_key: str
    run_dir: Path
    services: BenchServices

    async def usage_backlog(self) -> int:
        """Usage records in the gateways' Redis stream, not yet written to Postgres (the writer deletes
        each entry once its row is in)."""
        client = aioredis.from_url(self.services.redis_url)
        try:
            return int(await client.xlen(self.services.redis_prefix + redis_keys.USAGE_STREAM))
        finally:
            await client.aclose()

    def targets(self, role: str) -> list[Target]:
        worker = self.workers[role]
        counted_by = _counted_by(role)
        found = [
            Target(DIRECT, worker, None, worker, counted_by),
            Target(GATEWAY, self.gateway_endpoint, self.gateway.pid, worker, counted_by),
        ]
        for name, routers in self.peers.items():
            if role in routers:
                started, endpoint = routers[role]
                found.append(Target(name, endpoint, started.pid, worker, counted_by))
        return found

    def logged_target(self, role: str) -> Target:
        return Target(GATEWAY, self.logged_endpoint, self.logged_gateway.pid, self.workers[role], _counted_by(role))

    def model(self, role: str) -> str:
        return static_upstream.MODEL if role == STATIC else self.specs[role].model


def _counted_by(role: str) -> str:
    return NGINX if role == STATIC else MOCK


def chat_body(model: str, *, stream: bool, max_tokens: int | None = None, include_usage: bool = False) -> bytes:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": "Say hello."}]}
    if stream:
        body["stream"] = True
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def gateway_env(services: BenchServices, run_dir: Path, compiled_dir: Path | None = None) -> dict[str, str]:
    """The environment of a benchmarked gateway: the run's database and Redis prefix, warnings only; with
    `compiled_dir`, the compiled gateway built there (benchmarks/compiled.py)."""
    return {
        **os.environ,
        **(compiled.env(compiled_dir) if compiled_dir is not None else {}),
        **services.gateway_env(),
        "INVENTIV_LOG_LEVEL": "WARNING",
        "INVENTIV_DATA_DIR": str(run_dir / "gateway-data"),
        "INVENTIV_WORKER_STALE_AFTER_S": str(_STALE_AFTER_S),
        "INVENTIV_WORKER_SECRET_KEY": secrets.token_urlsafe(48),
    }


@asynccontextmanager
async def running_stack(run_dir: Path, specs: tuple[WorkerSpec, ...], peers: dict[Peer, Path],
                        nginx: Path | None, compiled_dir: Path | None = None) -> AsyncIterator[Stack]:  # fmt: skip
    """Everything up; `peers` maps each peer to run to its executable; without `nginx`, no static upstream;
    the gateways compiled from `compiled_dir` (benchmarks/compiled.py) when given."""
    async with AsyncExitStack() as exits:
        services = await exits.enter_async_context(bench_services(run_dir))
        workers: dict[str, Endpoint] = {}
        for spec in specs:
            workers[spec.role] = await start_worker(exits, spec, run_dir)
        role_models = {spec.role: spec.model for spec in specs}
        if nginx is not None:
            workers[STATIC] = await start_static_upstream(exits, nginx, workers[specs[0].role], run_dir)
            role_models[STATIC] = static_upstream.MODEL
        models = [role_models[role] for role in workers]
        api_key, _ = await prepare_database(
            services.database_url, {role_models[role]: (LOOPBACK, w.port) for role, w in workers.items()},
            extra_models=[static_upstream.MODEL] if nginx is not None else [],
        )
        env = gateway_env(services, run_dir, compiled_dir)
        gateway, endpoint = await start_gateway(exits, "gateway", env, run_dir, api_key, models)
        logged_env = {**env, "INVENTIV_LOG_LEVEL": "INFO", "INVENTIV_LOG_FORMAT": "json"}
        logged, logged_endpoint = await start_gateway(exits, "gateway-logged", logged_env, run_dir, api_key, models)
        routers: dict[str, dict[str, tuple[Started, Endpoint]]] = {}
        for peer, binary in peers.items():
            routers[peer.name] = {}
            for role, worker in workers.items():
                routers[peer.name][role] = await start_peer(exits, peer, binary, role, role_models[role], worker,
                                                            run_dir)  # fmt: skip
        yield Stack({s.role: s for s in specs}, workers, gateway, endpoint, logged, logged_endpoint, routers, api_key,
                    run_dir, services)  # fmt: skip


async def start_gateway(
    exits: AsyncExitStack, name: str, env: dict[str, str], run_dir: Path, api_key: str, models: list[str]
) -> tuple[Started, Endpoint]:
    endpoint = Endpoint(LOOPBACK, free_port())
    argv = [sys.executable, "-m", "inventiv", "gateway", "--workers", "1", "--port", str(endpoint.port)]
    gateway = await start(name, argv, cpu=PROXY_CPU, log_dir=run_dir, env=env, cwd=run_dir)
    exits.push_async_callback(stop, gateway)
    await wait_ready(gateway, endpoint, get_request(endpoint, "/readyz"))
    for model in models:
        body = chat_body(model, stream=False, max_tokens=1)
        headers = {"Authorization": f"Bearer {api_key}"}
        await wait_ready(gateway, endpoint, build_request("POST", endpoint, "/v1/chat/completions", body, headers))
    return gateway, endpoint


async def start_static_upstream(exits: AsyncExitStack, nginx: Path, fast: Endpoint, run_dir: Path) -> Endpoint:
    """nginx on CPU 0, answering the bytes the fast worker answers to (a-static)'s request."""
    body = chat_body(static_upstream.MODEL, stream=False)
    answer = await fetch(fast, build_request("POST", fast, static_upstream.CHAT, body))
    if answer.status != 200:
        raise ProcessFailed(f"the fast worker answered {answer.status} to the static upstream's request")
    endpoint = Endpoint(LOOPBACK, free_port())
    nginx_dir = run_dir / "static-upstream"
    nginx_dir.mkdir()
    (nginx_dir / "nginx.conf").write_text(static_upstream.config(nginx_dir, endpoint.port, answer.body))
    started = await start("static-upstream", static_upstream.argv(nginx, nginx_dir), cpu=LOAD_CPU, log_dir=run_dir,
                          cwd=run_dir)  # fmt: skip
    exits.push_async_callback(stop, started)
    await wait_ready(started, endpoint, get_request(endpoint, "/health"))
    return endpoint


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


async def start_peer(exits: AsyncExitStack, peer: Peer, binary: Path, role: str, model: str, worker: Endpoint,
                     run_dir: Path) -> tuple[Started, Endpoint]:  # fmt: skip
    endpoint = Endpoint(LOOPBACK, free_port())
    if peer.system:
        argv = nginx_proxy.prepare(binary, run_dir / f"{peer.name}-{role}", endpoint.port, worker)
    else:
        argv = peer.launch_argv(binary, endpoint.port, f"http://{worker.host}:{worker.port}", free_port())
    # Offline: it would otherwise try to fetch a tokenizer named after the model at start.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = await start(f"{peer.name}-{role}", argv, cpu=PROXY_CPU, log_dir=run_dir, env=env, cwd=run_dir)
    exits.push_async_callback(stop, started)
    body = chat_body(model, stream=False, max_tokens=1)
    await wait_ready(started, endpoint, build_request("POST", endpoint, "/v1/chat/completions", body))
    return started, endpoint
