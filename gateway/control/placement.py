"""Whether a deployment request can be placed: type, zone and model checked against the catalog.

Pure: the handler loads the rows, these functions decide, so every refusal is tested table-driven.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.error_codes import ErrorCode
from gateway.errors import ApiError, bad_request, not_found

Row = dict[str, Any] | None

# Clients send UUIDs, ULIDs or hashes; 200 printable characters covers all of them. The OpenAPI document
# shows the same pattern.
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")


def check_placement(instance_type: Row, zone: Row, offer: Row, model: Row) -> None:
    """Raise the first reason the request cannot be placed, naming the field at fault."""
    if instance_type is None:
        raise not_found("No such instance type.", ErrorCode.INSTANCE_TYPE_NOT_FOUND, "instance_type_id")
    if not instance_type["is_active"]:
        raise bad_request(f"Instance type {instance_type['code']} is not active.", "instance_type_id",
                          ErrorCode.INSTANCE_TYPE_INACTIVE)
    if zone is None:
        raise not_found("No such zone.", ErrorCode.ZONE_NOT_FOUND, "zone_id")
    if zone["provider_id"] != instance_type["provider_id"]:
        raise bad_request(
            f"Zone {zone['code']} belongs to provider {zone['provider_code']}, but instance type "
            f"{instance_type['code']} to provider {instance_type['provider_code']}.",
            "zone_id", ErrorCode.ZONE_PROVIDER_MISMATCH,
        )
    if not zone["is_active"]:
        raise bad_request(f"Zone {zone['code']} is not active.", "zone_id", ErrorCode.ZONE_INACTIVE)
    if offer is None or not offer["is_available"]:
        raise bad_request(f"Instance type {instance_type['code']} is not offered in zone {zone['code']}.",
                          "zone_id", ErrorCode.INSTANCE_TYPE_NOT_OFFERED)
    if model is None:
        raise not_found("No such model.", ErrorCode.MODEL_NOT_FOUND, "model_id")
    if not model["is_active"]:
        raise bad_request(f"Model {model['hf_repo_id']} is not active.", "model_id", ErrorCode.MODEL_INACTIVE)


def scoped_idempotency_key(header: str | None, organization_id: str) -> str | None:
    """The key as stored: scoped to the organization, so two tenants' keys never collide."""
    if header is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(header):
        raise bad_request("Idempotency-Key must be 1 to 200 printable ASCII characters without spaces.",
                          "Idempotency-Key", ErrorCode.INVALID_IDEMPOTENCY_KEY)
    return f"{organization_id}:{header}"


def check_replay(existing: dict[str, Any], requested: dict[str, Any]) -> None:
    """A repeated Idempotency-Key must repeat the request; reusing it for another one is a 409."""
    for name in ("instance_type_id", "zone_id", "model_id", "data_volume_gb", "data_volume_delete_on_terminate"):
        if _text(existing[name]) != _text(requested.get(name)):
            raise ApiError(409, f"This Idempotency-Key was used for a deployment with another {name}.",
                           ErrorCode.IDEMPOTENCY_KEY_REUSED, name)


def _text(value: Any) -> str | None:
    # Ids come back from the driver as uuid.UUID or str depending on its setup; compare their text.
    return None if value is None else str(value)
