"""POST /internal/workers/heartbeat: worker-secret auth, the worker fields, the change event."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from inventiv import redis_keys
from inventiv.worker_secrets import worker_secrets

if TYPE_CHECKING:
    from conftest import Api

PATH = "/internal/workers/heartbeat"
MINE = "mine"  # the instance's own secret


async def _beat(api: Api, body: dict[str, Any], token: str | None = MINE, expect: int = 200) -> Any:
    if token == MINE:
        token = worker_secrets(api.settings).for_instance(body["instance_id"])
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with api.client.post(PATH, json=body, headers=headers) as resp:
        answer = await resp.json()
        assert resp.status == expect, answer
        return answer


async def test_heartbeat_updates_worker_fields_and_publishes(api: Api) -> None:
    instance_id = await api.insert_instance(status="booting", worker_consecutive_failures=3)
    pubsub = api.redis.pubsub()
    await pubsub.subscribe(redis_keys.key(api.settings, redis_keys.WORKERS_CHANGED))
    try:
        await pubsub.get_message(timeout=1.0)
        answer = await _beat(api, {"instance_id": instance_id, "worker_status": "ready",
                                   "model_id": "Qwen/Qwen2.5-0.5B-Instruct", "queue_depth": 4})
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
        assert message is not None and message["data"].decode() == instance_id
    finally:
        await pubsub.aclose()
    assert answer["instance_id"] == instance_id and answer["worker_last_heartbeat_at"]
    rows = await api.sql("SELECT worker_status, worker_model_id, worker_queue_depth, worker_consecutive_failures,"
                         " worker_last_heartbeat_at IS NOT NULL FROM instances WHERE id = %(i)s", {"i": instance_id})
    assert rows == [("ready", "Qwen/Qwen2.5-0.5B-Instruct", 4, 0, True)]
    await _beat(api, {"instance_id": instance_id, "worker_status": "unhealthy"})
    rows = await api.sql("SELECT worker_status, worker_model_id, worker_queue_depth FROM instances"
                         " WHERE id = %(i)s", {"i": instance_id})
    assert rows == [("unhealthy", "Qwen/Qwen2.5-0.5B-Instruct", 4)]


async def test_secrets_are_checked_per_instance(api: Api) -> None:
    mine = await api.insert_instance()
    other = await api.insert_instance()
    mine_secret = worker_secrets(api.settings).for_instance(mine)
    body = {"worker_status": "ready"}
    for instance_id in (other, "00000000-0000-4000-8000-000000000000"):
        answer = await _beat(api, {**body, "instance_id": instance_id}, token=mine_secret, expect=401)
        assert answer["error"]["code"] == "invalid_worker_token"
    await _beat(api, {**body, "instance_id": mine}, token="wrong", expect=401)
    answer = await _beat(api, {**body, "instance_id": mine}, token=None, expect=401)
    assert answer["error"]["code"] == "missing_worker_token"
    # An admin API key is not a worker token.
    await _beat(api, {**body, "instance_id": mine}, token=api.admin_key, expect=401)
    rows = await api.sql("SELECT count(*) FROM instances WHERE worker_last_heartbeat_at IS NOT NULL")
    assert rows == [(0,)]


async def test_closed_instances_refuse_heartbeats(api: Api) -> None:
    instance_id = await api.insert_instance(status="terminating")
    answer = await _beat(api, {"instance_id": instance_id, "worker_status": "ready"}, expect=409)
    assert answer["error"]["code"] == "instance_closed"


@pytest.mark.parametrize(
    ("body", "param"),
    [({"worker_status": "ready"}, "instance_id"), ({"instance_id": "x", "worker_status": "ready"}, "instance_id"),
     ({"instance_id": "ID"}, "worker_status"), ({"instance_id": "ID", "worker_status": "stale"}, "worker_status"),
     ({"instance_id": "ID", "worker_status": "ready", "queue_depth": -1}, "queue_depth"),
     ({"instance_id": "ID", "worker_status": "ready", "queue_depth": "3"}, "queue_depth"),
     ({"instance_id": "ID", "worker_status": "ready", "gpu_util": 0.5}, "gpu_util")],
)
async def test_bad_bodies_are_400(api: Api, body: dict[str, Any], param: str) -> None:
    instance_id = await api.insert_instance()
    body = {k: instance_id if v == "ID" else v for k, v in body.items()}
    secret = worker_secrets(api.settings).for_instance(instance_id)
    answer = await _beat(api, body, token=secret, expect=400)
    assert answer["error"]["param"] == param
