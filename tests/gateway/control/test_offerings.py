"""GET/POST/PATCH /offerings: publish, (de)activate, grants, and who may change what."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Api


async def test_list_and_filter(api: Api) -> None:
    body = await api.get("/offerings")
    assert [o["name"] for o in body["data"]] == ["demo/qwen-14b", "demo/qwen-7b", "demo/qwen-small"]
    public = await api.get("/offerings?visibility=public")
    assert [o["name"] for o in public["data"]] == ["demo/qwen-small"]
    assert public["data"][0]["model_hf_repo_id"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert (await api.get(f"/offerings?organization_id={api.other_org_id}"))["data"] == []
    page = await api.get("/offerings?limit=2")
    rest = await api.get(f"/offerings?limit=2&cursor={page['next_cursor']}")
    assert [o["name"] for o in rest["data"]] == ["demo/qwen-small"]


async def test_create_patch_and_grants(api: Api) -> None:
    _, offering = await api.call("POST", "/offerings", json={
        "model_id": api.ids["Qwen/Qwen2.5-7B-Instruct"], "model_code": "chat",
        "granted_organization_ids": [api.other_org_id],
    }, expect=201)
    assert offering["name"] == "demo/chat" and offering["visibility"] == "private" and offering["is_active"]
    assert offering["granted_organization_ids"] == [api.other_org_id]
    _, changed = await api.call("PATCH", f"/offerings/{offering['id']}",
                                json={"is_active": False, "visibility": "public", "granted_organization_ids": []},
                                expect=200)
    assert (changed["is_active"], changed["visibility"], changed["granted_organization_ids"]) == (False, "public", [])
    _, dup = await api.call("POST", "/offerings", json={"model_id": api.ids["Qwen/Qwen2.5-7B-Instruct"],
                                                         "model_code": "chat"}, expect=409)
    assert dup["error"]["param"] == "model_code"


async def test_only_the_owner_changes_an_offering(api: Api) -> None:
    offering = (await api.get("/offerings?visibility=public"))["data"][0]
    _, body = await api.call("PATCH", f"/offerings/{offering['id']}", json={"is_active": False},
                             key=api.other_admin_key, expect=403)
    assert body["error"]["code"] == "forbidden_organization"
    await api.call("POST", "/offerings", json={"model_id": api.ids["Qwen/Qwen2.5-7B-Instruct"], "model_code": "x",
                                               "organization_id": api.org_id}, key=api.other_admin_key, expect=403)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [({"model_code": "x"}, 400, "model_id"), ({"model_id": "MODEL"}, 400, "model_code"),
     ({"model_id": "MODEL", "model_code": "-bad"}, 400, "model_code"),
     ({"model_id": "MODEL", "model_code": "x", "visibility": "secret"}, 400, "visibility"),
     ({"model_id": "00000000-0000-4000-8000-000000000000", "model_code": "x"}, 404, "model_id"),
     ({"model_id": "MODEL", "model_code": "x", "granted_organization_ids": ["00000000-0000-4000-8000-000000000000"]},
      400, "granted_organization_ids"),
     ({"model_id": "MODEL", "model_code": "x", "granted_organization_ids": "all"}, 400, "granted_organization_ids"),
     ({"model_id": "MODEL", "model_code": "x", "price": 1}, 400, "price")],
)
async def test_bad_creates(api: Api, body: dict[str, Any], status: int, param: str) -> None:
    body = {k: api.ids["Qwen/Qwen2.5-7B-Instruct"] if v == "MODEL" else v for k, v in body.items()}
    _, answer = await api.call("POST", "/offerings", json=body, expect=status)
    assert answer["error"]["param"] == param
    assert len((await api.get("/offerings"))["data"]) == 3


async def test_bad_patches(api: Api) -> None:
    offering = (await api.get("/offerings"))["data"][0]
    await api.call("PATCH", f"/offerings/{offering['id']}", json={}, expect=400)
    _, body = await api.call("PATCH", f"/offerings/{offering['id']}", json={"model_code": "y"}, expect=400)
    assert body["error"]["param"] == "model_code"
    await api.call("PATCH", "/offerings/00000000-0000-4000-8000-000000000000", json={"is_active": True}, expect=404)
    await api.call("PATCH", f"/offerings/{offering['id']}", data=b"{", headers={"Content-Type": "application/json"},
                   expect=400)
