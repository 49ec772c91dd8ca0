from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from memory_provider import serve_worker

from inventiv import redis_keys
from providers.mock.worker import WorkerConfig, create_app
from scheduler.health import WorkerHealth, check_ready_workers, judge
from worker.engines import DEFAULT_ENGINE, ENGINES, engine, queue_depth
from worker.probe import Probe, parse_models, probe_worker

MODEL = "Qwen/Qwen2.5-7B-Instruct"

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 5.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name="m"} 1234.0
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VLLM_METRICS, 7),
        (VLLM_METRICS.replace("vllm:num_requests_running", "other_gauge"), 5),
        ("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.0\n", None),
        ("", None),
    ],
)
def test_parse_queue_depth(text: str, expected: int | None) -> None:
    assert queue_depth(text, ENGINES[DEFAULT_ENGINE].queue_gauges) == expected


SGLANG_METRICS = """\
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m"} 3.0
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="m"} 4.0
"""
LLAMA_CPP_METRICS = """\
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 1
"""


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [("vllm", VLLM_METRICS, 7), ("sglang", SGLANG_METRICS, 7), ("llama_cpp", LLAMA_CPP_METRICS, 3),
     ("sglang", VLLM_METRICS, None), ("openai", VLLM_METRICS, None)],
)
def test_queue_depth_comes_from_the_engines_own_gauges(name: str, text: str, expected: int | None) -> None:
    assert queue_depth(text, engine(name).queue_gauges) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"object": "list", "data": [{"id": "a"}, {"id": "b"}]}, ("a", "b")),
        ({"data": [{"id": 3}, "x", {"id": "ok"}]}, ("ok",)),
        ({"data": "nope"}, ()),
        ([], ()),
    ],
)
def test_parse_models(body: object, expected: tuple[str, ...]) -> None:
    assert parse_models(body) == expected


ANSWER = Probe(True, (MODEL,), 0)
WRONG_MODEL = Probe(True, ("other/model",), 0)
SILENT = Probe(False, error="connection refused")
REFUSED = Probe(False, error="/v1/models answered 401", refused=True)


@pytest.mark.parametrize(
    ("probe", "status", "failures", "age", "expected"),
    [
        (ANSWER, "unhealthy", 7, 400.0, WorkerHealth("ready", 0)),
        (WRONG_MODEL, "ready", 0, 1.0, WorkerHealth("starting", 0)),
        (SILENT, "ready", 0, 5.0, WorkerHealth("ready", 1)),  # one blip keeps the traffic
        (SILENT, "ready", 1, 10.0, WorkerHealth("ready", 2)),
        (SILENT, "ready", 2, 15.0, WorkerHealth("unhealthy", 3)),  # N in a row: no more traffic
        (SILENT, "unhealthy", 9, 299.0, WorkerHealth("unhealthy", 10)),
        (SILENT, "ready", 0, 300.0, WorkerHealth("stale", 1)),  # 5 minutes without an answer
        (SILENT, "ready", 0, None, WorkerHealth("stale", 1)),
        (REFUSED, "ready", 0, 1.0, WorkerHealth("unhealthy", 1)),  # refuses our secret: no traffic at once
    ],
)
def test_judge(probe: Probe, status: str, failures: int, age: float | None, expected: WorkerHealth) -> None:
    got = judge(probe, MODEL, previous_status=status, previous_failures=failures, heartbeat_age_s=age,
                failure_threshold=3, stale_after_s=300.0)  # fmt: skip
    assert got == expected


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


SECRET = "the-workers-secret"
BEARER = f"Bearer {SECRET}"


async def test_probe_a_real_worker_with_its_secret(http: aiohttp.ClientSession) -> None:
    runner = web.AppRunner(create_app(WorkerConfig(model=MODEL, num_waiting=4, api_key=SECRET)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        probe = await probe_worker(http, host, port, 2.0, BEARER)
        wrong = await probe_worker(http, host, port, 2.0, "Bearer another-installations-secret")
    finally:
        await runner.cleanup()
    assert probe == Probe(True, (MODEL,), 4)
    assert probe.serves(MODEL) and not probe.serves("other/model")
    assert wrong == Probe(False, error="/v1/models answered 401: the worker refused its secret", refused=True)


async def test_probe_of_a_dead_port_is_no_answer(http: aiohttp.ClientSession) -> None:
    probe = await probe_worker(http, "127.0.0.1", closed_port(), 2.0, BEARER)
    assert not probe.answered and probe.error


async def test_a_failing_health_route_is_no_answer(http: aiohttp.ClientSession) -> None:
    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/health", unavailable)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        probe = await probe_worker(http, host, port, 2.0, BEARER)
    finally:
        await runner.cleanup()
    assert probe == Probe(False, error="/health answered 503")


async def make_ready(db_pool: Any, instance_id: str, port: int, heartbeat_age_s: float = 0.0) -> None:
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE instances SET status = 'ready', worker_status = 'ready', ip_address = '127.0.0.1', "
            "worker_port = %s, worker_last_heartbeat_at = now() - make_interval(secs => %s) WHERE id = %s",
            (port, heartbeat_age_s, instance_id),
        )


async def test_check_ready_workers_marks_unhealthy_after_n_failures_then_ready_again(
    make_instance: Any, db: Any, db_pool: Any, rt: Any, redis: Any
) -> None:
    instance_id = await make_instance()
    port = closed_port()
    await make_ready(db_pool, instance_id, port)
    pubsub = redis.pubsub()
    await pubsub.subscribe(redis_keys.key(rt.settings, redis_keys.WORKERS_CHANGED))
    try:
        statuses = []
        for _ in range(3):
            assert await check_ready_workers(rt) == 1
            statuses.append((await db.instance(instance_id))["worker_status"])
        assert statuses == ["ready", "ready", "unhealthy"]
        row = await db.instance(instance_id)
        assert row["worker_consecutive_failures"] == 3

        async with serve_worker(MODEL) as (_, live_port):
            await make_ready(db_pool, instance_id, live_port)
            async with db_pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute("UPDATE instances SET worker_status = 'unhealthy' WHERE id = %s", (instance_id,))
            await check_ready_workers(rt)
        row = await db.instance(instance_id)
        assert (row["worker_status"], row["worker_consecutive_failures"], row["worker_model_id"]) == ("ready", 0, MODEL)
        messages = []
        for _ in range(50):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if message is not None:
                messages.append(message["data"].decode())
            if len(messages) == 4:
                break
        assert messages == [instance_id] * 4, "every change is published to the gateways"
    finally:
        await pubsub.aclose()


async def test_a_worker_that_refuses_its_secret_loses_its_traffic_at_once(
    make_instance: Any, db: Any, db_pool: Any, rt: Any
) -> None:
    instance_id = await make_instance()
    async with serve_worker(MODEL, api_key="not-this-instances-secret") as (_, port):
        await make_ready(db_pool, instance_id, port)
        await check_ready_workers(rt)
    row = await db.instance(instance_id)
    assert (row["worker_status"], row["worker_consecutive_failures"]) == ("unhealthy", 1)


async def test_the_health_job_presents_each_workers_own_secret(
    make_instance: Any, db: Any, db_pool: Any, rt: Any
) -> None:
    instance_id = await make_instance()
    async with serve_worker(MODEL, api_key=rt.secrets.for_instance(instance_id)) as (_, port):
        await make_ready(db_pool, instance_id, port)
        await check_ready_workers(rt)
    assert (await db.instance(instance_id))["worker_status"] == "ready"


async def test_a_worker_silent_for_five_minutes_is_stale(make_instance: Any, db: Any, db_pool: Any, rt: Any) -> None:
    instance_id = await make_instance()
    await make_ready(db_pool, instance_id, closed_port(), heartbeat_age_s=301)
    await check_ready_workers(rt)
    assert (await db.instance(instance_id))["worker_status"] == "stale"


async def test_only_ready_instances_are_probed(make_instance: Any, rt: Any) -> None:
    await make_instance()
    assert await check_ready_workers(rt) == 0
