"""The scheduler's own /metrics: served on its port, and the boot-image outcomes it counts."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import pytest
from memory_provider import MemoryProvider
from prometheus_client import REGISTRY

from scheduler.metrics import serving

L40S = "L40S-1-48G"


def boot_images(outcome: str) -> float:
    return REGISTRY.get_sample_value("inventiv_scheduler_boot_image_resolutions_total", {"outcome": outcome}) or 0.0


async def test_metrics_are_served_and_a_taken_port_is_survived(caplog: pytest.LogCaptureFixture) -> None:
    async with serving("127.0.0.1", 0) as none:
        assert none is None, "port 0: not served"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with serving("127.0.0.1", port) as bound:
            assert bound is None and "scheduler metrics not served" in caplog.text
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    async with (
        serving("127.0.0.1", free) as bound,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{bound}/metrics") as resp,
    ):
        text = await resp.text()
    assert "inventiv_scheduler_boot_image_resolutions_total" in text and "inventiv_scheduler_passes_total" in text


@pytest.fixture
def provider() -> MemoryProvider:
    return MemoryProvider("scaleway", diskless_types=[L40S], images={(L40S, "ubuntu_jammy_gpu_os_12"): "img-1"})


async def test_boot_image_resolutions_are_counted_by_outcome(
    make_instance: Any, driver: Any, provider: MemoryProvider, db_pool: Any
) -> None:
    before = {o: boot_images(o) for o in ("resolved", "cached", "none", "configured")}
    for _ in range(2):  # the first asks the cloud and stores its answer; the second reads it back
        await make_instance(provider="scaleway", zone="fr-par-2", instance_type=L40S)
        await driver.run_due()
    # Nothing fits any more, and nothing stored: the instance fails for want of an image.
    provider.images.clear()
    driver.rt.boot_images.clear()
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("UPDATE instance_types SET allocation_params = '{}' WHERE code = %s", (L40S,))
    await make_instance(provider="scaleway", zone="fr-par-2", instance_type=L40S)
    await driver.run_due()
    after = {o: boot_images(o) for o in before}
    assert {o: after[o] - before[o] for o in before} == {"resolved": 1, "cached": 0, "none": 1, "configured": 1}
