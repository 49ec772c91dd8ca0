"""Which deployment requests can be placed, and what an Idempotency-Key replay must repeat."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.control.placement import check_placement, check_replay, scoped_idempotency_key
from gateway.errors import ApiError

TYPE = {"id": "t", "code": "L4", "provider_id": "scw", "provider_code": "scaleway", "is_active": True}
ZONE = {"id": "z", "code": "fr-par-1", "provider_id": "scw", "provider_code": "scaleway", "is_active": True}
OFFER = {"is_available": True}
MODEL = {"id": "m", "hf_repo_id": "Qwen/x", "is_active": True}


def _with(row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**row, **changes}


@pytest.mark.parametrize(
    ("rows", "status", "param", "code"),
    [
        ((None, ZONE, OFFER, MODEL), 404, "instance_type_id", "instance_type_not_found"),
        ((_with(TYPE, is_active=False), ZONE, OFFER, MODEL), 400, "instance_type_id", "instance_type_inactive"),
        ((TYPE, None, OFFER, MODEL), 404, "zone_id", "zone_not_found"),
        ((TYPE, _with(ZONE, provider_id="mock", provider_code="mock"), None, MODEL), 400, "zone_id",
         "zone_provider_mismatch"),
        ((TYPE, _with(ZONE, is_active=False), OFFER, MODEL), 400, "zone_id", "zone_inactive"),
        ((TYPE, ZONE, None, MODEL), 400, "zone_id", "instance_type_not_offered"),
        ((TYPE, ZONE, {"is_available": False}, MODEL), 400, "zone_id", "instance_type_not_offered"),
        ((TYPE, ZONE, OFFER, None), 404, "model_id", "model_not_found"),
        ((TYPE, ZONE, OFFER, _with(MODEL, is_active=False)), 400, "model_id", "model_inactive"),
    ],
)
def test_refusals_name_the_field(rows: tuple[Any, ...], status: int, param: str, code: str) -> None:
    with pytest.raises(ApiError) as caught:
        check_placement(*rows)
    assert (caught.value.status, caught.value.param, caught.value.code) == (status, param, code)


def test_a_fitting_request_passes() -> None:
    check_placement(TYPE, ZONE, OFFER, MODEL)


def test_idempotency_keys_are_scoped_to_the_organization() -> None:
    assert scoped_idempotency_key(None, "org") is None
    assert scoped_idempotency_key("abc-123", "org") == "org:abc-123"
    for bad in ("", "has space", "x" * 201, "é"):
        with pytest.raises(ApiError) as caught:
            scoped_idempotency_key(bad, "org")
        assert caught.value.param == "Idempotency-Key"


_REQUEST = {"instance_type_id": "t", "zone_id": "z", "model_id": "m", "data_volume_gb": None,
            "data_volume_delete_on_terminate": True}


def test_a_replay_repeating_the_request_passes() -> None:
    check_replay({"id": "i", **_REQUEST}, dict(_REQUEST))


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"instance_type_id": "t2"}, "instance_type_id"),
        ({"zone_id": "z2"}, "zone_id"),
        ({"model_id": "m2"}, "model_id"),
        ({"data_volume_gb": 50}, "data_volume_gb"),
        ({"data_volume_delete_on_terminate": False}, "data_volume_delete_on_terminate"),
    ],
)
def test_a_replay_must_repeat_the_request(change: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as caught:
        check_replay({"id": "i", **_REQUEST}, {**_REQUEST, **change})
    assert (caught.value.status, caught.value.param, caught.value.code) == (409, param, "idempotency_key_reused")
