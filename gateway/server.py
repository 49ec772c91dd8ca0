"""Run the gateway: N processes on uvloop sharing the port with SO_REUSEPORT, draining on SIGTERM.

The parent only supervises. Each child binds its own listening socket (the kernel spreads new
connections across them), loads its caches, and on SIGTERM/SIGINT: /readyz turns 503, new requests
get 503, requests in flight get up to `drain_timeout_s` to finish, then the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator

from aiohttp import web

from gateway import state
from gateway.app import create_app
from gateway.redis_persistence import check_persistence
from gateway.runner import GatewayRunner
from inventiv.logs import setup_logging
from inventiv.process_group import supervise
from inventiv.services import ensure_services
from inventiv.settings import Settings
from inventiv.worker_secrets import worker_secrets

log = logging.getLogger(__name__)

# A listen backlog for bursts of thousands of new connections (the kernel caps it at somaxconn).
_BACKLOG = 4096
# What aiohttp waits for at cleanup, after our own drain: only idle keep-alive connections are left
# by then (its default, 60 s, kept a drained process alive for a minute).
_SHUTDOWN_S = 1.0
# Beyond the children's own drain timeout, before those still running are killed.
_KILL_GRACE_S = 5.0
# How often a gateway child checks that its supervisor is still alive.
_ORPHAN_CHECK_S = 1.0
# The metrics folder of a gateway group: the prefix, the supervisor's pid, mkdtemp's random suffix.
_METRICS_PREFIX = "inventiv-metrics-"
_METRICS_FOLDER = re.compile(rf"{_METRICS_PREFIX}(\d+)-[^/]+")
# Allocations between first-generation collections: ten times CPython's default (see _tune_gc).
_GC_FIRST_THRESHOLD = 7000


def serve(settings: Settings) -> int:
    workers = settings.gateway_workers or os.cpu_count() or 1
    with ensure_services(settings) as resolved:
        import uvloop

        # One clear line for a missing worker secret key or an unmigrated database, rather than a
        # traceback from every process.
        worker_secrets(resolved)
        uvloop.run(_check_schema(resolved))
        assert resolved.redis_url is not None
        check_persistence(resolved.redis_url)
        if workers == 1:
            _worker_main(resolved)
            return 0
        with _shared_metrics():
            return _run_workers(resolved, workers)


@contextlib.contextmanager
def _shared_metrics() -> Iterator[None]:
    """A fresh folder where every gateway process writes its metric values, for the life of the group.

    The children are spawned, so they import prometheus_client with the variable already set.
    """
    from gateway.metrics import MULTIPROCESS_DIR_ENV

    parent = tempfile.gettempdir()
    for name in stale_metrics_folders(os.listdir(parent), _alive):
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    # Named for this supervisor: one killed outright (SIGKILL, OOM) leaves it, the next start removes it.
    folder = tempfile.mkdtemp(prefix=f"{_METRICS_PREFIX}{os.getpid()}-")
    previous = os.environ.get(MULTIPROCESS_DIR_ENV)
    os.environ[MULTIPROCESS_DIR_ENV] = folder
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MULTIPROCESS_DIR_ENV, None)
        else:
            os.environ[MULTIPROCESS_DIR_ENV] = previous
        shutil.rmtree(folder, ignore_errors=True)


def stale_metrics_folders(names: list[str], alive: Callable[[int], bool]) -> list[str]:
    """The metrics folders among `names` whose supervisor (the pid in the name) is gone."""
    stale = []
    for name in names:
        match = _METRICS_FOLDER.fullmatch(name)
        if match is not None and not alive(int(match[1])):
            stale.append(name)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


async def _check_schema(settings: Settings) -> None:
    from inventiv.services import open_pool
    from sql.migrate import require_current

    async with open_pool(settings, maxsize=1) as pool:
        await require_current(pool)


def _run_workers(settings: Settings, count: int) -> int:
    # spawn, not fork: each child starts its own clean event loop and connection pools.
    ctx = multiprocessing.get_context("spawn")
    parent = os.getpid()
    children = [
        ctx.Process(target=_worker_main, args=(settings, parent), name=f"gateway-{i}") for i in range(count)
    ]
    for child in children:
        child.start()
    return supervise(children, settings.drain_timeout_s + _KILL_GRACE_S).status


def _worker_main(settings: Settings, parent: int | None = None) -> None:
    import uvloop

    setup_logging(settings.log_format, settings.log_level)
    _tune_gc()
    uvloop.run(run_app(settings, parent=parent))


async def run_app(settings: Settings, stop: asyncio.Event | None = None, parent: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set, or the `parent` process is gone), then drain."""
    app = create_app(settings)
    # handler_cancellation: a client that disconnects cancels its handler, which closes the upstream
    # request at once (the GPU stops generating) even before the first byte was sent.
    runner = GatewayRunner(
        app, handle_signals=False, access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_S,
        head_timeout_s=settings.header_timeout_s, keepalive_timeout=settings.keepalive_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(
        runner, settings.gateway_host, settings.gateway_port, reuse_port=True, backlog=_BACKLOG
    )
    await site.start()
    log.info("gateway listening", extra={"host": settings.gateway_host, "port": settings.gateway_port})
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    orphan_watch = asyncio.create_task(_stop_when_orphaned(parent, stop)) if parent is not None else None
    await stop.wait()
    if orphan_watch is not None:
        orphan_watch.cancel()
    await drain(app, settings.drain_timeout_s)
    await runner.cleanup()


async def _stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
    """A supervisor killed outright (SIGKILL, OOM) cannot stop its children: they notice and drain."""
    # Polling: the kernel tells a child nothing when its parent dies (no portable parent-death signal).
    while os.getppid() == parent:  # noqa: ASYNC110
        await asyncio.sleep(_ORPHAN_CHECK_S)
    log.warning("the supervising gateway process is gone; draining", extra={"parent": parent})
    stop.set()


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the streaming path.

    Requests allocate many short-lived objects; with CPython's default first threshold (700) a
    collection runs every few requests, and the full ones walk every object the process holds,
    pausing all streams for milliseconds. What the process imported is frozen out of collection,
    and first-generation collections run a tenth as often.
    """
    gc.collect()
    gc.freeze()
    _, *older = gc.get_threshold()
    gc.set_threshold(_GC_FIRST_THRESHOLD, *older)


async def drain(app: web.Application, timeout_s: float) -> None:
    lifecycle = app[state.LIFECYCLE]
    lifecycle.draining = True
    log.info("draining", extra={"in_flight": lifecycle.in_flight})
    if lifecycle.in_flight == 0:
        return
    try:
        await asyncio.wait_for(lifecycle.idle.wait(), timeout_s)
    except TimeoutError:
        log.warning("drain timeout; closing requests still in flight", extra={"in_flight": lifecycle.in_flight})
