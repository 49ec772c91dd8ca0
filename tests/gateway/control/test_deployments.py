"""POST /deployments through real Postgres and Redis: validation, the row, the log, the command."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from gateway.app import create_app

if TYPE_CHECKING:
    from conftest import Api

pytestmark = pytest.mark.usefixtures("db_pool")


async def test_deployment_writes_instance_log_and_command(api: Api) -> None:
    _, body = await api.call("POST", "/deployments", json=api.deployment(data_volume_gb=40), expect=202)
    assert body["status"] == "provisioning"
    assert body["organization_id"] == api.org_id
    assert (body["provider_code"], body["zone_code"], body["instance_type_code"]) == ("mock", "local-1", "MOCK-GPU-S")
    assert body["model"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert body["data_volume_gb"] == 40
    assert body["worker_port"] == 8000
    assert body["provisioning_deadline_at"] > body["created_at"]
    assert body["storages"] == [] and body["storage_count"] == 0
    logs = await api.sql("SELECT action_type, component, status FROM action_logs WHERE instance_id = %(i)s",
                         {"i": body["id"]})
    assert logs == [("REQUEST_CREATE", "api", "success")]
    commands = await api.commands()
    assert [(c["type"], c["instance_id"]) for c in commands] == [("PROVISION", body["id"])]
    assert commands[0]["requested_at"]


async def test_data_volume_is_deleted_on_terminate_unless_asked_otherwise(api: Api) -> None:
    _, kept = await api.call("POST", "/deployments", json=api.deployment(data_volume_delete_on_terminate=False),
                             expect=202)
    _, default = await api.call("POST", "/deployments", json=api.deployment(), expect=202)
    assert (kept["data_volume_delete_on_terminate"], default["data_volume_delete_on_terminate"]) == (False, True)
    rows = await api.sql("SELECT id::text, data_volume_delete_on_terminate FROM instances")
    assert dict(rows) == {kept["id"]: False, default["id"]: True}
    assert (await api.get(f"/instances/{kept['id']}"))["data_volume_delete_on_terminate"] is False
    listed = {i["id"]: i["data_volume_delete_on_terminate"] for i in (await api.get("/instances"))["data"]}
    assert listed == {kept["id"]: False, default["id"]: True}
    logs = await api.sql("SELECT metadata->>'data_volume_delete_on_terminate' FROM action_logs"
                         " WHERE instance_id = %(i)s", {"i": kept["id"]})
    assert logs == [("false",)]


async def test_deadline_follows_the_setting(api: Api) -> None:
    _, body = await api.call("POST", "/deployments", json=api.deployment(), expect=202)
    rows = await api.sql("SELECT provisioning_deadline_at - created_at FROM instances WHERE id = %(i)s",
                         {"i": body["id"]})
    assert abs(rows[0][0].total_seconds() - api.settings.provisioning_deadline_s) < 5


async def test_idempotency_key_returns_the_same_instance(api: Api) -> None:
    headers = {"Idempotency-Key": "deploy-1"}
    status, first = await api.call("POST", "/deployments", json=api.deployment(), headers=headers)
    assert status == 202
    async with api.client.post("/deployments", json=api.deployment(), headers={**api.auth(), **headers}) as resp:
        assert resp.status == 202, await resp.text()
        assert resp.headers["Idempotent-Replayed"] == "true"
        assert (await resp.json())["id"] == first["id"]
    assert (await api.sql("SELECT count(*) FROM instances"))[0][0] == 1
    assert len(await api.commands()) == 1
    _, other = await api.call("POST", "/deployments", json=api.deployment(), key=api.other_admin_key,
                              headers=headers, expect=202)
    assert other["id"] != first["id"]


async def test_concurrent_requests_with_one_idempotency_key_make_one_instance(api: Api) -> None:
    headers = {"Idempotency-Key": "race"}
    results = await asyncio.gather(*(
        api.call("POST", "/deployments", json=api.deployment(), headers=headers) for _ in range(4)
    ))
    assert {status for status, _ in results} == {202}
    assert len({body["id"] for _, body in results}) == 1
    assert (await api.sql("SELECT count(*) FROM instances"))[0][0] == 1


async def test_reusing_an_idempotency_key_for_another_request_is_a_conflict(api: Api) -> None:
    headers = {"Idempotency-Key": "k"}
    await api.call("POST", "/deployments", json=api.deployment(), headers=headers, expect=202)
    _, body = await api.call("POST", "/deployments", json=api.deployment(data_volume_gb=10), headers=headers,
                             expect=409)
    assert body["error"]["code"] == "idempotency_key_reused"


async def test_replaying_with_another_delete_on_terminate_is_a_conflict(api: Api) -> None:
    headers = {"Idempotency-Key": "keep"}
    keep = api.deployment(data_volume_delete_on_terminate=False)
    _, first = await api.call("POST", "/deployments", json=keep, headers=headers, expect=202)
    _, again = await api.call("POST", "/deployments", json=keep, headers=headers, expect=202)
    assert again["id"] == first["id"]
    for other in (api.deployment(), api.deployment(data_volume_delete_on_terminate=True)):
        _, body = await api.call("POST", "/deployments", json=other, headers=headers, expect=409)
        assert (body["error"]["code"], body["error"]["param"]) == ("idempotency_key_reused",
                                                                   "data_volume_delete_on_terminate")
    assert (await api.sql("SELECT count(*) FROM instances"))[0][0] == 1


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"zone_id": "fr-par-1"}, 400, "zone_id"),
        ({"instance_type_id": "00000000-0000-4000-8000-000000000000"}, 404, "instance_type_id"),
        ({"zone_id": "00000000-0000-4000-8000-000000000000"}, 404, "zone_id"),
        ({"model_id": "00000000-0000-4000-8000-000000000000"}, 404, "model_id"),
        ({"model_id": "not-a-uuid"}, 400, "model_id"),
        ({"data_volume_gb": -1}, 400, "data_volume_gb"),
        ({"data_volume_gb": "big"}, 400, "data_volume_gb"),
        ({"data_volume_gb": 10**12}, 400, "data_volume_gb"),
        ({"data_volume_delete_on_terminate": "false"}, 400, "data_volume_delete_on_terminate"),
        ({"data_volume_delete_on_terminate": 0}, 400, "data_volume_delete_on_terminate"),
        ({"data_volume_delete_on_terminate": None}, 400, "data_volume_delete_on_terminate"),
        ({"gpu": 2}, 400, "gpu"),
    ],
)
async def test_bad_requests_name_the_field(api: Api, change: dict[str, Any], status: int, param: str) -> None:
    body = api.deployment()
    for name, value in change.items():
        body[name] = api.ids.get(value, value) if isinstance(value, str) else value
    _, answer = await api.call("POST", "/deployments", json=body, expect=status)
    assert answer["error"]["param"] == param
    assert set(answer["error"]) >= {"message", "type", "code"}
    assert (await api.sql("SELECT count(*) FROM instances"))[0][0] == 0
    assert await api.commands() == []


async def test_type_not_offered_in_zone(api: Api) -> None:
    await api.sql("UPDATE instance_type_zones SET is_available = false WHERE instance_type_id = %(t)s",
                  {"t": api.ids["MOCK-GPU-S"]})
    _, body = await api.call("POST", "/deployments", json=api.deployment(), expect=400)
    assert (body["error"]["param"], body["error"]["code"]) == ("zone_id", "instance_type_not_offered")


async def test_inactive_model_is_refused(api: Api) -> None:
    await api.sql("UPDATE models SET is_active = false")
    _, body = await api.call("POST", "/deployments", json=api.deployment(), expect=400)
    assert (body["error"]["param"], body["error"]["code"]) == ("model_id", "model_inactive")


@pytest.mark.parametrize(
    "raw", [b"{not json", b"[]", b"", b'{"instance_type_id": 1}'],
)
async def test_malformed_bodies_are_400(api: Api, raw: bytes) -> None:
    _, body = await api.call("POST", "/deployments", data=raw, headers={"Content-Type": "application/json"},
                             expect=400)
    assert body["error"]["type"] == "invalid_request_error"


async def test_bad_idempotency_key_is_400(api: Api) -> None:
    _, body = await api.call("POST", "/deployments", json=api.deployment(), headers={"Idempotency-Key": "a b"},
                             expect=400)
    assert body["error"]["param"] == "Idempotency-Key"


async def test_auth_is_required(api: Api) -> None:
    async with api.client.post("/deployments", json=api.deployment()) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "missing_api_key"
    _, body = await api.call("POST", "/deployments", json=api.deployment(), key="ik_wrong", expect=401)
    assert body["error"]["code"] == "invalid_api_key"
    _, body = await api.call("POST", "/deployments", json=api.deployment(), key=api.inference_key, expect=403)
    assert body["error"]["code"] == "insufficient_scope"


async def test_redis_down_still_records_the_request(aiohttp_client: Any, api: Api) -> None:
    # Nothing listens on port 1: every Redis call fails at once.
    client = await aiohttp_client(create_app(api.settings.replace(redis_url="redis://127.0.0.1:1/0")))
    async with client.post("/deployments", json=api.deployment(), headers=api.auth()) as resp:
        assert resp.status == 202
        instance_id = (await resp.json())["id"]
    rows = await api.sql("SELECT status FROM instances WHERE id = %(i)s", {"i": instance_id})
    assert rows == [("provisioning",)]
    assert await api.commands() == []


# Quotas (gateway/control/quotas.py) ---------------------------------------------------------------------


async def _quota(api: Api, **values: Any) -> None:
    assignments = ", ".join(f"{name} = %({name})s" for name in values)
    await api.sql(f"UPDATE organizations SET {assignments} WHERE id = %(o)s", {**values, "o": api.org_id})


async def test_instance_quota_refuses_before_any_row_or_command(api: Api) -> None:
    await _quota(api, max_instances=2)
    await api.insert_instance(status="ready")
    await api.insert_instance(status="terminated")
    await api.insert_instance(status="ready", org="other")
    await api.call("POST", "/deployments", json=api.deployment(), expect=202)
    _, body = await api.call("POST", "/deployments", json=api.deployment(), expect=429)
    assert body["error"] == {
        "message": "The organization's quota of 2 live instances is reached: 2 are live.",
        "type": "rate_limit_error", "code": "quota_exceeded", "param": "max_instances",
    }
    assert len(await api.commands()) == 1
    rows = await api.sql("SELECT count(*) FROM instances WHERE organization_id = %(o)s", {"o": api.org_id})
    assert rows == [(3,)]


async def test_gpu_quota_counts_the_new_instance_types_gpus(api: Api) -> None:
    await api.sql("UPDATE instance_types SET gpu_count = 2 WHERE code = 'MOCK-GPU-S'")
    await _quota(api, max_gpus=3)
    await api.call("POST", "/deployments", json=api.deployment(), expect=202)
    _, body = await api.call("POST", "/deployments", json=api.deployment(), expect=429)
    assert body["error"]["param"] == "max_gpus"
    assert body["error"]["message"] == (
        "The organization's quota of 3 GPUs would be exceeded: 2 are in use and this instance type has 2."
    )


async def test_a_spent_monthly_budget_refuses_new_deployments(api: Api) -> None:
    await api.sql("UPDATE instance_types SET cost_per_hour = 10 WHERE code = 'MOCK-GPU-S'")
    await api.insert_instance(status="terminated", created_at="2020-01-01T00:00:00Z",
                              terminated_at="2020-01-02T00:00:00Z", updated_at="2020-01-02T00:00:00Z")
    await _quota(api, monthly_budget=5)
    # Years-old spend is not this month's.
    await api.call("POST", "/deployments", json=api.deployment(), expect=202)
    await api.sql("UPDATE instances SET created_at = now() - interval '1 hour' WHERE status = 'provisioning'")
    _, body = await api.call("POST", "/deployments", json=api.deployment(), expect=429)
    assert body["error"]["param"] == "monthly_budget"
    assert body["error"]["message"].startswith("The organization's monthly budget of 5.00 is spent: 10.0")


async def test_an_idempotent_replay_is_not_refused_by_a_quota(api: Api) -> None:
    await _quota(api, max_instances=1)
    headers = {"Idempotency-Key": "once"}
    _, first = await api.call("POST", "/deployments", json=api.deployment(), headers=headers, expect=202)
    _, again = await api.call("POST", "/deployments", json=api.deployment(), headers=headers, expect=202)
    assert again["id"] == first["id"]


async def test_concurrent_deployments_cannot_both_take_the_last_unit(api: Api) -> None:
    await _quota(api, max_instances=3)
    await api.insert_instance(status="ready")
    await api.insert_instance(status="booting")
    results = await asyncio.gather(*(api.call("POST", "/deployments", json=api.deployment()) for _ in range(4)))
    assert sorted(status for status, _ in results) == [202, 429, 429, 429]
    rows = await api.sql("SELECT count(*) FROM instances WHERE status NOT IN ('terminated', 'failed')")
    assert rows == [(3,)]
