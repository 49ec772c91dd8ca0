"""Scaleway error bodies -> our typed provider errors.

A Scaleway error is JSON: `type`, `message`, optional `resource`, `resource_id`, `fields`, `details`,
`precondition`. The type decides, whatever the status (the status of `out_of_stock` is unconfirmed);
the status only decides where the type is missing or unknown.
"""

from __future__ import annotations

from typing import Any

from providers.base import (
    AuthError,
    InvalidRequest,
    NotFound,
    OutOfStock,
    ProviderError,
    QuotaExceeded,
    TransientError,
)

# One line per error type seen in Scaleway's SDKs and recorded traffic.
ERROR_TYPES: dict[str, type[ProviderError]] = {
    "not_found": NotFound,
    "unknown_resource": NotFound,
    "quotas_exceeded": QuotaExceeded,
    "out_of_stock": OutOfStock,
    # The resource is busy changing state, or locked for a while: the same call works later.
    "transient_state": TransientError,
    "locked": TransientError,
    "conflict": TransientError,
    "invalid_arguments": InvalidRequest,
    "invalid_request_error": InvalidRequest,
    "precondition_failed": InvalidRequest,
    "resource_expired": InvalidRequest,
    "permissions_denied": AuthError,
    "denied_authentication": AuthError,
    "authentication_error": AuthError,
}

# A precondition that only time fixes: a volume still attached or detaching.
_IN_USE_PRECONDITIONS = ("resource_still_in_use",)


def error_from_response(status: int, body: Any, context: str) -> ProviderError:
    """The typed error for a Scaleway answer with `status` >= 400; `context` says which call it was."""
    fields = body if isinstance(body, dict) else {}
    vendor_type = str(fields.get("type") or "")
    message = str(fields.get("message") or "")
    text = _describe(status, vendor_type, message, fields, context)
    return _error_class(status, vendor_type, message, fields)(text, status=status)


def _error_class(status: int, vendor_type: str, message: str, fields: dict[str, Any]) -> type[ProviderError]:
    lowered = message.lower()
    # Quota is also reported as a 403 invalid_request_error "Quota exceeded for this resource."
    if vendor_type == "quotas_exceeded" or "quota" in lowered:
        return QuotaExceeded
    if vendor_type == "out_of_stock" or "out of stock" in lowered:
        return OutOfStock
    if vendor_type == "precondition_failed" and (
        fields.get("precondition") in _IN_USE_PRECONDITIONS or "in use" in lowered
    ):
        return TransientError
    if vendor_type in ERROR_TYPES:
        return ERROR_TYPES[vendor_type]
    return _class_for_status(status)


def _class_for_status(status: int) -> type[ProviderError]:
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFound
    if status in (409, 429) or status >= 500:
        return TransientError
    if 400 <= status < 500:
        return InvalidRequest
    return ProviderError


def _describe(status: int, vendor_type: str, message: str, fields: dict[str, Any], context: str) -> str:
    text = f"Scaleway {context}: {status} {vendor_type or 'error'}"
    if message:
        text += f": {message}"
    if fields.get("resource"):
        text += f" ({fields['resource']} {fields.get('resource_id') or ''})".replace(" )", ")")
    if fields.get("fields"):
        text += f"; fields: {fields['fields']}"
    if fields.get("details"):
        text += f"; details: {fields['details']}"
    return text
