"""Boot images for Scaleway types: which types need an sbs (diskless) root, and which image boots them.

A type needs one when its `products/servers` entry has `volumes_constraint.max_size == 0` (no local
disk); that catalog is cached per zone. Only when the catalog cannot be read does the name-prefix rule
decide. Images come from the Marketplace (`local-images`, type `instance_sbs`), trying the labels in
order and keeping the first x86_64 image that lists the type as compatible (the API does not filter
on either).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from providers.base import ProviderError
from providers.scaleway.client import ScalewayClient

log = logging.getLogger(__name__)

# GPU families without local disk: the fallback when the catalog is unavailable.
DISKLESS_PREFIXES = ("L4-", "L40S-", "H100-")
# Preferred labels when the caller gives none: the GPU OS image (drivers included) first.
DEFAULT_LABELS = ("ubuntu_jammy_gpu_os_12", "ubuntu_noble", "ubuntu_jammy")
ARCH = "x86_64"
# Types and images change a few times a year; an hour keeps a long-running scheduler current.
CACHE_TTL_S = 3600.0


def needs_sbs_boot(commercial_type: str, catalog: Mapping[str, Any] | None) -> bool:
    entry = (catalog or {}).get(commercial_type)
    constraint = entry.get("volumes_constraint") if isinstance(entry, dict) else None
    if isinstance(constraint, dict) and "max_size" in constraint:
        return bool(constraint["max_size"] == 0)
    return commercial_type.startswith(DISKLESS_PREFIXES)


def pick_image(images: Iterable[Mapping[str, Any]], commercial_type: str) -> str | None:
    for image in images:
        if image.get("arch") == ARCH and commercial_type in (image.get("compatible_commercial_types") or ()):
            return str(image["id"])
    return None


class BootImages:
    def __init__(self, client: ScalewayClient, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._catalogs: dict[str, tuple[float, dict[str, Any]]] = {}
        self._images: dict[tuple[str, str, tuple[str, ...]], tuple[float, str]] = {}
        self._lock = asyncio.Lock()

    async def catalog(self, zone: str) -> dict[str, Any] | None:
        """The zone's `products/servers` map (cached), or None when it cannot be read now."""
        async with self._lock:
            cached = self._catalogs.get(zone)
            if cached is not None and self._clock() - cached[0] < CACHE_TTL_S:
                return cached[1]
            try:
                catalog = await self._client.map_instance(f"/instance/v1/zones/{zone}/products/servers", "servers")
            except ProviderError as exc:
                log.warning("scaleway catalog unavailable, using name rules", extra={"zone": zone, "error": str(exc)})
                return None
            self._catalogs[zone] = (self._clock(), catalog)
            return catalog

    async def needs_boot_image(self, zone: str, commercial_type: str) -> bool:
        return needs_sbs_boot(commercial_type, await self.catalog(zone))

    async def resolve(self, zone: str, commercial_type: str, labels: Sequence[str]) -> str | None:
        key = (zone, commercial_type, tuple(labels))
        cached = self._images.get(key)
        if cached is not None and self._clock() - cached[0] < CACHE_TTL_S:
            return cached[1]
        for label in labels:
            images = await self._client.list_counted(
                "/marketplace/v2/local-images",
                "local_images",
                [("image_label", label), ("zone", zone), ("type", "instance_sbs"), ("order_by", "type_asc")],
            )
            image_id = pick_image(images, commercial_type)
            if image_id is not None:
                self._images[key] = (self._clock(), image_id)
                return image_id
        return None
