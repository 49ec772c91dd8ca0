"""The image a type boots from, for types with no local disk (Scaleway L4, L40S, H100: sbs roots).

Order: the id configured in `instance_types.allocation_params.<provider>.boot_image_id` (blank counts as
unset); the one this process resolved before (cached per provider, zone and type); the provider's
catalog, tried with `provider_settings.boot_image_labels` in order (none configured: the provider's own
default labels), whose answer is logged and persisted for the next process. Concurrent first passes of
one type share a single resolution. Nothing fits: the instance fails with SCW_DISKLESS_BOOT_IMAGE_REQUIRED,
saying what to configure.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from providers.base import Provider
from scheduler import metrics
from scheduler.retry import StepFailed
from scheduler.runtime import Runtime
from scheduler.work import InstanceWork
from sql.queries import queries

log = logging.getLogger(__name__)

NO_IMAGE_CODE = "SCW_DISKLESS_BOOT_IMAGE_REQUIRED"


def configured_boot_image(allocation_params: Mapping[str, Any], provider_code: str, zone: str) -> str | None:
    """The stored image id usable in `zone`, if any.

    An id set by hand has no zone and is used everywhere; one the scheduler resolved carries the zone it
    came from, since Marketplace image ids are per zone.
    """
    params = allocation_params.get(provider_code)
    if not isinstance(params, Mapping):
        return None
    image = params.get("boot_image_id")
    if not isinstance(image, str) or not image.strip():
        return None
    resolved_in = params.get("boot_image_zone")
    if resolved_in is not None and resolved_in != zone:
        return None
    return image.strip()


def missing_image_message(work: InstanceWork, labels: list[str]) -> str:
    tried = ", ".join(labels) if labels else "none configured, so the provider's defaults"
    return (
        f"instance type {work.instance_type_code} has no local disk and must boot from a block-volume image, "
        f"but no image in zone {work.zone_code} fits it (labels tried: {tried}). Set "
        f"instance_types.allocation_params.{work.provider_code}.boot_image_id to an image id for this type, "
        f"or add a matching label to provider_settings.boot_image_labels"
    )


async def boot_image_for(rt: Runtime, work: InstanceWork, provider: Provider) -> str | None:
    """The image to create the server with; None lets the provider use its default for the type."""
    zone, type_code = work.zone_code, work.instance_type_code
    if not await provider.needs_boot_image(zone, type_code):
        return None
    configured = configured_boot_image(work.allocation_params, work.provider_code, zone)
    if configured is not None:
        metrics.BOOT_IMAGES.labels("configured").inc()
        return configured
    key = (work.provider_code, zone, type_code)
    cached = rt.boot_images.get(key)
    if cached is not None:
        metrics.BOOT_IMAGES.labels("cached").inc()
        return cached
    labels = list(work.boot_image_labels)
    try:
        image = await rt.boot_image_flights.run(key, lambda: _resolve(rt, work, provider, labels))
    except Exception:
        metrics.BOOT_IMAGES.labels("error").inc()
        raise
    if image is None:
        metrics.BOOT_IMAGES.labels("none").inc()
        raise StepFailed(NO_IMAGE_CODE, missing_image_message(work, labels))
    metrics.BOOT_IMAGES.labels("resolved").inc()
    return image


async def _resolve(rt: Runtime, work: InstanceWork, provider: Provider, labels: list[str]) -> str | None:
    zone, type_code = work.zone_code, work.instance_type_code
    image = await provider.resolve_boot_image(zone, type_code, labels)
    if image is None:
        return None
    rt.boot_images[(work.provider_code, zone, type_code)] = image
    async with rt.pool.acquire() as conn:
        await queries.instance_types.save_resolved_boot_image(
            conn,
            instance_type_id=work.instance_type_id,
            provider_code=work.provider_code,
            boot_image_id=image,
            zone=zone,
        )
    log.info(
        "boot image resolved",
        extra={"provider": work.provider_code, "zone": zone, "instance_type": type_code, "image": image,
               "labels": labels or "provider defaults"},
    )  # fmt: skip
    return image
