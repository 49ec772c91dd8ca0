"""GET /providers, /zones, /instance_types: the demo catalog, filters, availability, pages."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Api


async def test_providers(api: Api) -> None:
    body = await api.get("/providers")
    assert [p["code"] for p in body["data"]] == ["mock", "scaleway"]
    first = await api.get("/providers?limit=1")
    second = await api.get(f"/providers?limit=1&cursor={first['next_cursor']}")
    assert [p["code"] for p in first["data"] + second["data"]] == ["mock", "scaleway"]
    assert second["has_more"] is False


async def test_zones(api: Api) -> None:
    codes = [z["code"] for z in (await api.get("/zones"))["data"]]
    assert codes == ["local-1", "fr-par-1", "fr-par-2", "nl-ams-1"]
    scaleway = await api.get("/zones?provider=scaleway&limit=2")
    rest = await api.get(f"/zones?provider=scaleway&limit=2&cursor={scaleway['next_cursor']}")
    assert [z["code"] for z in scaleway["data"] + rest["data"]] == ["fr-par-1", "fr-par-2", "nl-ams-1"]
    await api.sql("UPDATE zones SET is_active = false WHERE code = 'nl-ams-1'")
    assert [z["code"] for z in (await api.get("/zones?is_active=false"))["data"]] == ["nl-ams-1"]


async def test_instance_types_with_availability_by_zone(api: Api) -> None:
    await api.sql("UPDATE instance_type_zones SET is_available = false WHERE instance_type_id = %(t)s"
                  " AND zone_id = %(z)s", {"t": api.ids["H100-1-80G"], "z": api.ids["fr-par-2"]})
    types = {t["code"]: t for t in (await api.get("/instance_types?provider=scaleway"))["data"]}
    assert set(types) == {"L4-1-24G", "L40S-1-48G", "L40S-2-48G", "H100-1-80G", "RENDER-S"}
    h100 = types["H100-1-80G"]
    assert {z["zone_code"]: z["is_available"] for z in h100["zones"]} == {
        "fr-par-1": True, "fr-par-2": False, "nl-ams-1": True,
    }
    assert h100["cost_per_hour"] == 2.73 and h100["gpu_count"] == 1 and h100["worker_port"] == 8000
    mock = (await api.get("/instance_types?zone=local-1"))["data"]
    assert [t["code"] for t in mock] == ["MOCK-GPU-M", "MOCK-GPU-S"]


@pytest.mark.parametrize(
    ("path", "param"),
    [("/providers?code=mock", "code"), ("/zones?is_active=perhaps", "is_active"),
     ("/instance_types?limit=1000", "limit"), ("/zones?cursor=e30", "cursor")],
)
async def test_bad_queries_are_400(api: Api, path: str, param: str) -> None:
    _, body = await api.call("GET", path, expect=400)
    assert body["error"]["param"] == param


async def test_any_admin_key_reads_the_catalog(api: Api) -> None:
    for path in ("/providers", "/zones", "/instance_types", "/models", "/offerings"):
        assert (await api.get(path, key=api.other_admin_key))["data"]
        await api.call("GET", path, key=api.inference_key, expect=403)
