"""Which types need an sbs boot image, and which image boots them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fake_scaleway import FakeScaleway, run_fake_scaleway
from scaleway_bodies import GPU_IMAGE_ID, products_servers, recorded

from providers.scaleway.client import RetryPolicy, ScalewayClient
from providers.scaleway.images import BootImages, needs_sbs_boot, pick_image

ZONE = "fr-par-2"
CATALOG = products_servers()


@pytest.mark.parametrize(
    ("commercial_type", "catalog", "expected"),
    [
        ("L40S-1-48G", CATALOG, True),
        ("L4-1-24G", CATALOG, True),
        ("H100-1-80G", CATALOG, True),
        ("PRO2-XXS", CATALOG, True),  # no local disk although no GPU
        ("RENDER-S", CATALOG, False),  # GPU with local disk
        ("DEV1-S", CATALOG, False),
        ("L40S-9-48G", CATALOG, True),  # not in the catalog: name rule
        ("L40S-1-48G", None, True),  # catalog unavailable: name rule
        ("PRO2-XXS", None, False),
        ("RENDER-S", {}, False),
    ],
)
def test_needs_sbs_boot(commercial_type: str, catalog: dict[str, Any] | None, expected: bool) -> None:
    assert needs_sbs_boot(commercial_type, catalog) is expected


GPU_IMAGE = recorded("marketplace_local_images_gpu")["local_images"][0]
ARM_IMAGE = {**GPU_IMAGE, "id": "arm", "arch": "arm64"}


@pytest.mark.parametrize(
    ("images", "commercial_type", "expected"),
    [
        ([GPU_IMAGE], "L40S-1-48G", GPU_IMAGE_ID),
        ([GPU_IMAGE], "H100-SXM-8-80G", GPU_IMAGE_ID),
        ([GPU_IMAGE], "PRO2-XXS", None),  # not compatible
        ([ARM_IMAGE], "L40S-1-48G", None),  # wrong architecture
        ([ARM_IMAGE, GPU_IMAGE], "L40S-1-48G", GPU_IMAGE_ID),
        ([], "L40S-1-48G", None),
    ],
)
def test_pick_image(images: list[dict[str, Any]], commercial_type: str, expected: str | None) -> None:
    assert pick_image(images, commercial_type) == expected


@pytest.fixture
async def fake() -> AsyncIterator[FakeScaleway]:
    async with run_fake_scaleway() as running:
        yield running


@pytest.fixture
async def images(fake: FakeScaleway) -> AsyncIterator[BootImages]:
    client = ScalewayClient(fake.secret_key, fake.url, retry=RetryPolicy(attempts=1))
    yield BootImages(client)
    await client.close()


async def test_catalog_is_read_once(fake: FakeScaleway, images: BootImages) -> None:
    assert await images.needs_boot_image(ZONE, "L40S-1-48G") is True
    assert await images.needs_boot_image(ZONE, "RENDER-S") is False
    products = [path for _, path in fake.requests if path.endswith("/products/servers")]
    assert len(products) == 2  # 135 types, 100 a page


async def test_catalog_unavailable_falls_back_to_names_and_is_read_again(
    fake: FakeScaleway, images: BootImages
) -> None:
    fake.error_rate = 1.0
    assert await images.needs_boot_image(ZONE, "PRO2-XXS") is False  # name rule: wrong, but it answers
    fake.error_rate = 0.0
    assert await images.needs_boot_image(ZONE, "PRO2-XXS") is True


async def test_labels_are_tried_in_order(fake: FakeScaleway, images: BootImages) -> None:
    assert await images.resolve(ZONE, "L40S-1-48G", ["ubuntu_noble", "ubuntu_jammy_gpu_os_12"]) == GPU_IMAGE_ID
    # ubuntu_noble exists, but only its arm64 image lists BASIC2-A2C-4G; the x86_64 one does not.
    assert await images.resolve(ZONE, "BASIC2-A2C-4G", ["ubuntu_noble"]) is None
    assert await images.resolve(ZONE, "PRO2-XXS", ["ubuntu_jammy_gpu_os_12", "ubuntu_noble"]) == fake.images[-1]["id"]
    searched = [path for _, path in fake.requests if path == "/marketplace/v2/local-images"]
    assert len(searched) == 2 + 1 + 2


async def test_a_resolved_image_is_cached(fake: FakeScaleway, images: BootImages) -> None:
    assert await images.resolve(ZONE, "L4-1-24G", ["ubuntu_jammy_gpu_os_12"]) == GPU_IMAGE_ID
    fake.images.clear()
    assert await images.resolve(ZONE, "L4-1-24G", ["ubuntu_jammy_gpu_os_12"]) == GPU_IMAGE_ID
    assert await images.resolve(ZONE, "L4-2-24G", ["ubuntu_jammy_gpu_os_12"]) is None
