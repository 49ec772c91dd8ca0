"""Scaleway error bodies map to our typed errors, by type first and by status where the type says nothing."""

from __future__ import annotations

from typing import Any

import pytest
from scaleway_bodies import exchanges, recorded

from providers.base import (
    AuthError,
    InvalidRequest,
    NotFound,
    OutOfStock,
    ProviderError,
    QuotaExceeded,
    TransientError,
)
from providers.scaleway.errors import error_from_response


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, recorded("server_404"), NotFound),
        (404, {"type": "unknown_resource", "message": "x"}, NotFound),
        (403, {"type": "invalid_request_error", "message": "Quota exceeded for this resource."}, QuotaExceeded),
        (403, {"type": "quotas_exceeded", "message": "quota(s) exceeded", "details": [{"resource": "gpu"}]},
         QuotaExceeded),
        (400, {"type": "out_of_stock", "message": "server type is out of stock"}, OutOfStock),
        (503, {"type": "out_of_stock", "message": "no capacity"}, OutOfStock),  # status unconfirmed: type wins
        (400, {"type": "transient_state", "message": "resource is in a transient state"}, TransientError),
        (423, {"type": "locked", "message": "resource is locked"}, TransientError),
        (409, {"type": "conflict", "message": "conflict"}, TransientError),
        (412, {"type": "precondition_failed", "precondition": "resource_still_in_use", "message": "in use"},
         TransientError),
        (412, {"type": "precondition_failed", "precondition": "attribute_must_be_set", "message": "x"},
         InvalidRequest),
        (400, {"type": "invalid_arguments", "message": "invalid", "fields": {"size": ["too big"]}}, InvalidRequest),
        (400, {"type": "invalid_request_error", "message": "server should be stopped"}, InvalidRequest),
        (410, {"type": "resource_expired", "message": "expired"}, InvalidRequest),
        (403, {"type": "permissions_denied", "message": "denied"}, AuthError),
        (401, {"type": "denied_authentication", "message": "authentication is denied"}, AuthError),
        # No type: the status decides.
        (429, None, TransientError),
        (500, {"message": "<html>bad gateway</html>"}, TransientError),
        (502, None, TransientError),
        (401, None, AuthError),
        (404, None, NotFound),
        (422, {"type": "something_new"}, InvalidRequest),
        (302, None, ProviderError),
    ],
)
def test_error_class(status: int, body: Any, expected: type[ProviderError]) -> None:
    error = error_from_response(status, body, "GET /x")
    assert type(error) is expected
    assert error.status == status
    assert error.retryable is (expected is TransientError)


def test_every_recorded_error_is_not_found() -> None:
    errors = exchanges(status=404)
    assert errors
    for exchange in errors:
        assert isinstance(error_from_response(404, exchange.body, exchange.url), NotFound)


def test_message_names_the_call_and_the_details() -> None:
    body = {"type": "invalid_arguments", "message": "invalid argument(s)", "fields": {"size": ["too big"]}}
    error = error_from_response(400, body, "POST /block/v1/zones/fr-par-2/volumes")
    assert error.message == (
        "Scaleway POST /block/v1/zones/fr-par-2/volumes: 400 invalid_arguments: invalid argument(s); "
        "fields: {'size': ['too big']}"
    )
    assert "instance_server 6bc4b49b" in error_from_response(404, recorded("server_404"), "GET /s").message
