"""GET/POST/PATCH /models: the shared model catalog."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Api


async def test_list_and_filter(api: Api) -> None:
    body = await api.get("/models")
    assert [m["hf_repo_id"] for m in body["data"]] == [
        "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-14B-Instruct", "Qwen/Qwen2.5-7B-Instruct",
    ]
    await api.sql("UPDATE models SET is_active = false WHERE hf_repo_id = 'Qwen/Qwen2.5-14B-Instruct'")
    inactive = await api.get("/models?is_active=false")
    assert [m["hf_repo_id"] for m in inactive["data"]] == ["Qwen/Qwen2.5-14B-Instruct"]
    page = await api.get("/models?limit=2")
    rest = await api.get(f"/models?limit=2&cursor={page['next_cursor']}")
    assert [m["hf_repo_id"] for m in rest["data"]] == ["Qwen/Qwen2.5-7B-Instruct"]


async def test_create_then_patch(api: Api) -> None:
    _, model = await api.call("POST", "/models", json={
        "hf_repo_id": "meta-llama/Llama-3.1-8B-Instruct", "parameter_count": 8_000_000_000,
        "context_length": 131072, "data_volume_gb": 150,
    }, expect=201)
    assert model["name"] == "meta-llama/Llama-3.1-8B-Instruct" and model["is_active"] is True
    _, changed = await api.call("PATCH", f"/models/{model['id']}", json={"is_active": False, "name": "Llama"},
                                expect=200)
    assert (changed["is_active"], changed["name"], changed["data_volume_gb"]) == (False, "Llama", 150)
    _, cleared = await api.call("PATCH", f"/models/{model['id']}", json={"data_volume_gb": None}, expect=200)
    assert cleared["data_volume_gb"] is None and cleared["is_active"] is False
    _, again = await api.call("POST", "/models", json={"hf_repo_id": "meta-llama/Llama-3.1-8B-Instruct"},
                              expect=409)
    assert again["error"]["param"] == "hf_repo_id"


async def test_deactivated_model_cannot_be_deployed(api: Api) -> None:
    model_id = api.ids["Qwen/Qwen2.5-0.5B-Instruct"]
    await api.call("PATCH", f"/models/{model_id}", json={"is_active": False}, expect=200)
    _, body = await api.call("POST", "/deployments", json=api.deployment(), expect=400)
    assert body["error"]["param"] == "model_id"
    await api.call("PATCH", f"/models/{model_id}", json={"is_active": True}, expect=200)
    await api.call("POST", "/deployments", json=api.deployment(), expect=202)


@pytest.mark.parametrize(
    ("body", "param"),
    [({}, "hf_repo_id"), ({"hf_repo_id": " bad id"}, "hf_repo_id"), ({"hf_repo_id": "a/b", "data_volume_gb": -5},
     "data_volume_gb"), ({"hf_repo_id": "a/b", "parameter_count": 0}, "parameter_count"),
     ({"hf_repo_id": "a/b", "context_length": 2**31}, "context_length"), ({"hf_repo_id": "a/b", "size": 1}, "size"),
     ({"hf_repo_id": "a/b", "is_active": "yes"}, "is_active")],
)
async def test_bad_creates_are_400(api: Api, body: dict[str, Any], param: str) -> None:
    _, answer = await api.call("POST", "/models", json=body, expect=400)
    assert answer["error"]["param"] == param


async def test_bad_patches(api: Api) -> None:
    model_id = api.ids["Qwen/Qwen2.5-7B-Instruct"]
    _, body = await api.call("PATCH", f"/models/{model_id}", json={}, expect=400)
    assert body["error"]["code"] == "empty_update"
    _, body = await api.call("PATCH", f"/models/{model_id}", json={"hf_repo_id": "x/y"}, expect=400)
    assert body["error"]["param"] == "hf_repo_id"
    _, body = await api.call("PATCH", f"/models/{model_id}", json={"name": None}, expect=400)
    assert body["error"]["param"] == "name"
    await api.call("PATCH", "/models/nope", json={"is_active": True}, expect=400)
    await api.call("PATCH", "/models/00000000-0000-4000-8000-000000000000", json={"is_active": True}, expect=404)
    await api.call("PATCH", f"/models/{model_id}", json={"is_active": True}, key=api.inference_key, expect=403)
