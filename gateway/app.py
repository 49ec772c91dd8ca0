"""The gateway application: one aiohttp app serving the OpenAI data plane and the control API."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gateway import loop_lag, state, tracing
from gateway import metrics as metrics_module
from gateway.affinity import Affinity
from gateway.auth import KeyTable
from gateway.background import stop_tasks
from gateway.errors import error_middleware
from gateway.inference import setup_inference_routes
from gateway.limits import Limiter
from gateway.plane import DataPlane
from gateway.upstream import UpstreamPool
from gateway.usage_recorder import UsageRecorder, UsageWriter
from gateway.workers import WorkerView
from inventiv import redis_keys
from inventiv.logs import json_to_stderr
from inventiv.services import redis_client
from inventiv.settings import Settings
from inventiv.worker_secrets import worker_secrets
from sql.pool import close_pool, create_pool


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)
    app[state.SETTINGS] = settings
    app[state.LIFECYCLE] = state.Lifecycle()
    app[state.KEYS] = KeyTable()
    # Refused here, before anything starts, when the worker secret key is missing.
    app[state.WORKER_SECRETS] = worker_secrets(settings)
    app.cleanup_ctx.extend([_database, _redis, _data_plane])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    setup_inference_routes(app)

    from gateway.console import setup_console
    from gateway.console.auth import accept_session
    from gateway.control import setup_control_api

    setup_control_api(app, accept_session)
    setup_console(app)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[state.SETTINGS]
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, maxsize=10)
    app[state.DB] = pool
    yield
    await close_pool(pool)


async def _redis(app: web.Application) -> AsyncIterator[None]:
    client = redis_client(app[state.SETTINGS])
    app[state.REDIS] = client
    yield
    await client.aclose()


async def _data_plane(app: web.Application) -> AsyncIterator[None]:
    settings = app[state.SETTINGS]
    redis = app[state.REDIS]
    stream = redis_keys.key(settings, redis_keys.USAGE_STREAM)
    plane = DataPlane(
        settings=settings,
        keys=app[state.KEYS],
        lifecycle=app[state.LIFECYCLE],
        affinity=Affinity(redis, settings),
        usage=UsageRecorder(
            redis, stream, max_bytes=settings.usage_buffer_max_bytes, durable=settings.usage_durability == "durable"
        ),
        upstream=UpstreamPool(settings.upstream_connect_timeout_s),
        workers=WorkerView(settings.worker_stale_after_s),
        secrets=app[state.WORKER_SECRETS],
        access=access_sink(settings),
        limits=Limiter(redis, settings),
    )
    app[state.PLANE] = plane
    await plane.reload(app[state.DB])
    writer = UsageWriter(redis, app[state.DB], stream, redis_keys.key(settings, redis_keys.USAGE_GROUP))
    plane.usage.start()
    tasks = [
        asyncio.create_task(plane.refresh_forever(app[state.DB]), name="routing-refresh"),
        asyncio.create_task(plane.listen_forever(redis), name="routing-notifications"),
        asyncio.create_task(writer.run_forever(), name="usage-writer"),
        asyncio.create_task(plane.hot.fold_forever(lambda: plane.workers.in_flight), name="metrics-fold"),
        asyncio.create_task(loop_lag.probe_forever(), name="loop-lag-probe"),
    ]
    app[state.LIFECYCLE].loaded = True
    yield
    await stop_tasks(tasks)
    plane.hot.fold(plane.workers.in_flight)
    await plane.limits.flush()
    await plane.usage.close()
    plane.upstream.close()
    if plane.access is not None:
        plane.access.flush()


def access_sink(settings: Settings) -> tracing.AccessSink | None:
    """Buffered JSON lines in production's JSON logs; the logging module otherwise (a terminal, tests).
    Whether the `gateway.access` logger is on (INFO) is asked per request: a level can change at run time."""
    if not settings.access_log:
        return None
    return tracing.BufferedJsonLines(sys.stderr.buffer) if json_to_stderr() else tracing.LoggedLines()


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    lifecycle = request.app[state.LIFECYCLE]
    if lifecycle.draining:
        return web.json_response({"status": "draining"}, status=503)
    if not lifecycle.loaded:
        return web.json_response({"status": "loading"}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    plane = request.app.get(state.PLANE)
    if plane is not None:
        # What this process counted since its last fold (gateway/hot_metrics.py).
        plane.hot.fold(plane.workers.in_flight)
    registry = REGISTRY
    if metrics_module.multiprocess():
        # Several gateway processes: answer with every process's values, from their shared files.
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
