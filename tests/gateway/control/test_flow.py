"""The operator's whole flow with the scheduler stubbed out at its Redis stream:
create → (scheduler provisions, tracks volumes) → listed with storages → delete → terminating."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from inventiv.worker_secrets import worker_secrets

if TYPE_CHECKING:
    from conftest import Api

GB = 10**9


async def test_create_list_delete(api: Api) -> None:
    _, created = await api.call("POST", "/deployments", json=api.deployment(data_volume_gb=200), expect=202)
    instance_id = created["id"]

    # The scheduler's side: read the command, provision, track the volumes it attached.
    commands = await api.commands()
    assert [(c["type"], c["instance_id"]) for c in commands] == [("PROVISION", instance_id)]
    token = worker_secrets(api.settings).for_instance(instance_id)
    await api.sql(
        "UPDATE instances SET status = 'ready', provider_instance_id = 'srv-1', ip_address = '127.0.0.1',"
        " ready_at = now() WHERE id = %(i)s",
        {"i": instance_id},
    )
    await api.insert_volume(instance_id, "vol-root", 20 * GB, is_boot=True)
    await api.insert_volume(instance_id, "vol-data", 200 * GB)
    async with api.client.post("/internal/workers/heartbeat", headers={"Authorization": f"Bearer {token}"},
                               json={"instance_id": instance_id, "worker_status": "ready", "queue_depth": 0,
                                     "model_id": "Qwen/Qwen2.5-0.5B-Instruct"}) as resp:
        assert resp.status == 200

    listed = await api.get("/instances?status=ready")
    assert [(i["id"], i["storage_count"], i["storage_sizes_gb"]) for i in listed["data"]] == [
        (instance_id, 2, [20, 200]),
    ]
    detail = await api.get(f"/instances/{instance_id}")
    assert {s["provider_volume_id"]: s["is_boot"] for s in detail["storages"]} == {"vol-root": True,
                                                                                   "vol-data": False}
    assert (detail["worker_status"], detail["worker_url"]) == ("ready", "http://127.0.0.1:8000")

    _, deleted = await api.call("DELETE", f"/instances/{instance_id}", expect=202)
    assert deleted["status"] == "terminating"
    assert deleted["storage_count"] == 2
    commands = await api.commands()
    assert [(c["type"], c["instance_id"]) for c in commands] == [("PROVISION", instance_id),
                                                                 ("TERMINATE", instance_id)]
    logs = await api.get(f"/action_logs?instance_id={instance_id}")
    assert [row["action_type"] for row in logs["data"]] == ["REQUEST_TERMINATE", "REQUEST_CREATE"]
    assert (await api.get("/instances?status=terminating"))["data"][0]["id"] == instance_id


async def test_a_deployments_id_is_on_the_gateways_log_lines_about_it(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.control")
    _, created = await api.call("POST", "/deployments", json=api.deployment(), expect=202)
    instance_id = created["id"]
    await api.call("DELETE", f"/instances/{instance_id}", expect=202)

    about = [r.getMessage() for r in caplog.records if getattr(r, "instance_id", None) == instance_id]
    assert about == ["deployment requested", "termination requested"]
