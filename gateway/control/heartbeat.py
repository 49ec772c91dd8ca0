"""POST /internal/workers/heartbeat: a worker agent reports its state.

The agent authenticates with its instance's worker token (`Authorization: Bearer <token>`), which the
scheduler generated at provisioning and stored as a SHA-256 hash; the hash is compared in constant time.
An accepted heartbeat updates the worker fields and publishes the instance id so that every gateway
refreshes its ready-worker view at once instead of at its next poll.
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from gateway import state
from gateway.control import notify
from gateway.control.responses import json_response
from gateway.control.validation import INT4_MAX, FieldSpec, check_body, read_json_object
from gateway.errors import ApiError
from inventiv import redis_keys
from sql.queries import queries

# What a worker may say about itself; `unknown` and `stale` are the scheduler's verdicts, not a worker's.
WORKER_STATUSES = ("starting", "ready", "unhealthy")
# Heartbeats for instances in these states are refused: the scheduler is tearing them down.
_CLOSED = ("terminating", "terminated", "failed")
_BEARER = "Bearer "

BODY = {
    "instance_id": FieldSpec("uuid", required=True),
    "worker_status": FieldSpec("str", required=True, choices=WORKER_STATUSES),
    "model_id": FieldSpec("str", nullable=True, max_length=500, description="the model the worker serves"),
    "queue_depth": FieldSpec("int", nullable=True, minimum=0, maximum=INT4_MAX,
                             description="requests waiting (and running) on the worker"),
}


def token_matches(presented: str, stored_hash: str | None) -> bool:
    """Whether `presented` hashes to `stored_hash`, compared in constant time."""
    if not stored_hash:
        return False
    digest = hashlib.sha256(presented.encode()).hexdigest()
    return hmac.compare_digest(digest, stored_hash.lower())


def _presented_token(authorization: str | None) -> str:
    if not authorization or not authorization.startswith(_BEARER) or not authorization[len(_BEARER):].strip():
        raise ApiError(
            401, "Missing worker token: send 'Authorization: Bearer <worker token>'.", "missing_worker_token"
        )
    return authorization[len(_BEARER):].strip()


async def record_heartbeat(request: web.Request) -> web.Response:
    token = _presented_token(request.headers.get("Authorization"))
    body = check_body(await read_json_object(request), BODY)
    instance_id = body["instance_id"]
    async with request.app[state.DB].acquire() as conn:
        instance = await queries.instances.get_instance_worker_credentials(conn, instance_id=instance_id)
        # Unknown instance and wrong token answer alike, so the endpoint reveals no instance ids.
        if instance is None or not token_matches(token, instance["worker_token_hash"]):
            raise ApiError(401, "Invalid worker token for this instance.", "invalid_worker_token")
        if instance["status"] in _CLOSED:
            raise ApiError(409, f"The instance is {instance['status']}; heartbeats are no longer accepted.",
                           "instance_closed", "instance_id")
        row = await queries.instances.record_worker_heartbeat(
            conn,
            instance_id=instance_id,
            worker_status=body["worker_status"],
            worker_model_id=body.get("model_id"),
            worker_queue_depth=body.get("queue_depth"),
        )
    await notify.publish_change(
        request.app[state.REDIS], request.app[state.SETTINGS], redis_keys.WORKERS_CHANGED, instance_id
    )
    return json_response({"object": "worker_heartbeat", "instance_id": instance_id,
                          **{k: v for k, v in row.items() if k != "id"}})
