"""The scheduler's Prometheus metrics, served at GET /metrics on INVENTIV_SCHEDULER_METRICS_PORT.

Every scheduler process serves its own (standbys show what they did before they stood by); labels are
bounded: outcomes and step names, never ids.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

log = logging.getLogger(__name__)

BOOT_IMAGES = Counter(
    "inventiv_scheduler_boot_image_resolutions",
    "Boot images chosen for a new server, by outcome: configured (allocation_params), cached (this process "
    "resolved it before), resolved (asked the cloud), none (nothing fits: the instance fails), error",
    ["outcome"],
)
RELEASE_RETRIES = Counter(
    "inventiv_scheduler_release_retries",
    "Release passes (terminating, or cleaning up a failed instance) that failed and will be retried, by error "
    "code (a provider that cannot be reached: PROVIDER_NOT_CONFIGURED, PROVIDER_AUTH, PROVIDER_TRANSIENT...)",
    ["error_code"],
)
PASSES = Counter(
    "inventiv_scheduler_passes", "Passes over an instance, by outcome (progressed, waiting, retry, failed)", ["outcome"]
)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


@asynccontextmanager
async def serving(host: str, port: int) -> AsyncIterator[int | None]:
    """Serve /metrics on host:port while the block runs; yields the bound port (None when port is 0)."""
    if port == 0:
        yield None
        return
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        # The scheduling itself matters more than its figures: say so loudly, and run without them.
        log.error("scheduler metrics not served", extra={"host": host, "port": port, "error": str(exc)})
        await runner.cleanup()
        yield None
        return
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
