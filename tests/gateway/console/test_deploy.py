"""The deployment form's translation to the API's body, and where its errors go."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.console.deploy import deployment_body, field_errors
from gateway.errors import ApiError, bad_request


@pytest.mark.parametrize(("form", "body"), [
    ({}, {"data_volume_delete_on_terminate": False}),
    ({"instance_type_id": "t", "zone_id": "", "model_id": "m", "data_volume_delete_on_terminate": "on"},
     {"instance_type_id": "t", "model_id": "m", "data_volume_delete_on_terminate": True}),
    ({"data_volume_gb": " 100 "}, {"data_volume_gb": 100, "data_volume_delete_on_terminate": False}),
    ({"data_volume_gb": "0"}, {"data_volume_gb": 0, "data_volume_delete_on_terminate": False}),
    ({"data_volume_gb": "-1"}, {"data_volume_gb": "-1", "data_volume_delete_on_terminate": False}),
    ({"data_volume_gb": "1.5"}, {"data_volume_gb": "1.5", "data_volume_delete_on_terminate": False}),
    ({"data_volume_gb": ""}, {"data_volume_delete_on_terminate": False}),
])
def test_form_to_body(form: dict[str, str], body: dict[str, Any]) -> None:
    assert deployment_body(form) == body


@pytest.mark.parametrize(("error", "expected"), [
    (bad_request("bad zone", "zone_id"), {"zone_id": "bad zone"}),
    (bad_request("bad size", "data_volume_gb"), {"data_volume_gb": "bad size"}),
    (bad_request("bad key", "Idempotency-Key"), {"_form": "bad key"}),
    (ApiError(409, "conflict", "idempotency_conflict"), {"_form": "conflict"}),
])
def test_errors_go_beside_their_field(error: ApiError, expected: dict[str, str]) -> None:
    assert field_errors(error) == expected
