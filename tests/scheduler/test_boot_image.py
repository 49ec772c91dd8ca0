from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from memory_provider import MemoryProvider, serve_worker

from scheduler.boot_image import NO_IMAGE_CODE, configured_boot_image

L40S = "L40S-1-48G"


@pytest.mark.parametrize(
    ("params", "zone", "expected"),
    [
        ({"scaleway": {"boot_image_id": "img-hand"}}, "fr-par-2", "img-hand"),  # by hand: every zone
        ({"scaleway": {"boot_image_id": "img-2", "boot_image_zone": "fr-par-2"}}, "fr-par-2", "img-2"),
        ({"scaleway": {"boot_image_id": "img-2", "boot_image_zone": "fr-par-2"}}, "nl-ams-1", None),
        ({"scaleway": {"boot_image_id": ""}}, "fr-par-2", None),
        ({"scaleway": {}}, "fr-par-2", None),
        ({"scaleway": "img"}, "fr-par-2", None),
        ({"mock": {"boot_image_id": "img"}}, "fr-par-2", None),  # another provider's setting
        ({}, "fr-par-2", None),
    ],
)
def test_configured_boot_image(params: dict[str, Any], zone: str, expected: str | None) -> None:
    assert configured_boot_image(params, "scaleway", zone) == expected


@pytest.fixture
async def provider() -> AsyncIterator[MemoryProvider]:
    async with serve_worker("Qwen/Qwen2.5-7B-Instruct") as address:
        yield MemoryProvider(
            "scaleway",
            worker_address=address,
            diskless_types=[L40S],
            images={(L40S, "ubuntu_jammy_gpu_os_12"): "img-gpu-os-12", (L40S, "ubuntu_jammy"): "img-jammy"},
        )


async def allocation_params(db: Any) -> dict[str, Any]:
    (row,) = await db.rows("SELECT allocation_params FROM instance_types WHERE code = %s", L40S)
    params: dict[str, Any] = row["allocation_params"]
    return params


async def test_an_l40s_without_a_configured_image_resolves_persists_and_caches_it(
    make_instance: Any, drive: Any, db: Any, provider: MemoryProvider
) -> None:
    first = await make_instance(provider="scaleway", zone="fr-par-2", instance_type=L40S)
    await drive(first, "ready")
    second = await make_instance(provider="scaleway", zone="fr-par-2", instance_type=L40S)
    await drive(second, "ready")

    assert await allocation_params(db) == {
        "scaleway": {"boot_image_id": "img-gpu-os-12", "boot_image_zone": "fr-par-2"}
    }
    assert provider.count("resolve_boot_image") == 1
    assert {s.image for s in provider.servers.values()} == {"img-gpu-os-12"}
    (execute, *_) = await db.actions(first)
    assert execute["action_type"] == "EXECUTE_CREATE" and execute["metadata"]["boot_image"] == "img-gpu-os-12"


async def test_a_configured_image_is_used_and_kept(
    make_instance: Any, drive: Any, db: Any, db_pool: Any, provider: MemoryProvider
) -> None:
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE instance_types SET allocation_params = %s::jsonb WHERE code = %s",
            (orjson.dumps({"scaleway": {"boot_image_id": "img-ops", "other": 1}}).decode(), L40S),
        )
    instance_id = await make_instance(provider="scaleway", zone="fr-par-2", instance_type=L40S)
    await drive(instance_id, "ready")

    assert provider.count("resolve_boot_image") == 0
    assert [s.image for s in provider.servers.values()] == ["img-ops"]
    assert await allocation_params(db) == {"scaleway": {"boot_image_id": "img-ops", "other": 1}}


async def test_no_fitting_image_fails_with_what_to_configure(
    make_instance: Any, drive: Any, db: Any, db_pool: Any, provider: MemoryProvider
) -> None:
    provider.images.clear()
    instance_id = await make_instance(provider="scaleway", zone="fr-par-2", instance_type=L40S)

    row = await drive(instance_id, "failed")

    assert row["error_code"] == NO_IMAGE_CODE
    assert "allocation_params.scaleway.boot_image_id" in row["error_message"]
    assert "ubuntu_jammy_gpu_os_12" in row["error_message"], "it says which labels were tried"
    assert provider.count("create_server") == 0
    assert await allocation_params(db) == {}


async def test_types_with_local_disk_need_no_image(make_instance: Any, drive: Any, provider: MemoryProvider) -> None:
    instance_id = await make_instance(provider="scaleway", zone="fr-par-2", instance_type="RENDER-S")
    await drive(instance_id, "ready")
    assert provider.count("resolve_boot_image") == 0
    assert [s.image for s in provider.servers.values()] == [None]


async def test_first_passes_of_one_type_share_a_single_resolution(
    make_instance: Any, driver: Any, db: Any, provider: MemoryProvider
) -> None:
    resolve = provider.resolve_boot_image

    async def slow_resolve(zone: str, commercial_type: str, labels: Any) -> str | None:
        await asyncio.sleep(0.1)  # the Marketplace takes a while: every first pass arrives meanwhile
        return await resolve(zone, commercial_type, labels)

    provider.resolve_boot_image = slow_resolve  # type: ignore[method-assign]
    ids = [await make_instance(provider="scaleway", zone="fr-par-2", instance_type=L40S) for _ in range(5)]

    assert sorted(await driver.run_due()) == sorted(ids)

    assert provider.count("resolve_boot_image") == 1
    assert {s.image for s in provider.servers.values()} == {"img-gpu-os-12"} and len(provider.servers) == 5


async def test_without_configured_labels_the_providers_default_labels_are_tried(
    make_instance: Any, drive: Any, db_pool: Any, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("UPDATE provider_settings SET boot_image_labels = '{}' "
                          "WHERE provider_id = (SELECT id FROM providers WHERE code = 'scaleway')")  # fmt: skip
    instance_id = await make_instance(provider="scaleway", zone="fr-par-2", instance_type=L40S)
    caplog.set_level(logging.INFO, logger="scheduler.boot_image")

    await drive(instance_id, "ready")

    assert {s.image for s in provider.servers.values()} == {"img-gpu-os-12"}
    resolved = [r for r in caplog.records if r.getMessage() == "boot image resolved"]
    assert [(r.image, r.labels) for r in resolved] == [("img-gpu-os-12", "provider defaults")]  # type: ignore[attr-defined]


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_a_blank_configured_image_counts_as_unset(blank: str) -> None:
    assert configured_boot_image({"scaleway": {"boot_image_id": blank}}, "scaleway", "fr-par-2") is None
    assert configured_boot_image({"scaleway": {"boot_image_id": " img-1 "}}, "scaleway", "fr-par-2") == "img-1"
