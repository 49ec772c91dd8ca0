"""POST /internal/workers/heartbeat: a worker agent reports its state.

The agent authenticates with its instance's worker secret (`Authorization: Bearer <secret>`), the one
its engine was started with; the gateway derives it from the instance id (inventiv/worker_secrets.py)
and compares in constant time.
An accepted heartbeat updates the worker fields (and the machine's figures the agent measured) and
publishes the instance id so that every gateway refreshes its ready-worker view at once instead of at its
next poll; while heartbeats keep coming, the scheduler does not poll the worker.
"""

from __future__ import annotations

from aiohttp import web

from gateway import state
from gateway.control import notify
from gateway.control.input_validation import INT4_MAX, FieldSpec, check_body, read_json_object
from gateway.control.responses import dumps, json_response
from gateway.error_codes import ErrorCode
from gateway.errors import ApiError
from inventiv import redis_keys
from inventiv.statuses import InstanceStatus, WorkerStatus
from sql.queries import queries

# What a worker may say about itself; `unknown` and `stale` are the scheduler's verdicts, not a worker's.
WORKER_STATUSES = (WorkerStatus.STARTING, WorkerStatus.READY, WorkerStatus.UNHEALTHY)
# Heartbeats for instances in these states are refused: the scheduler is tearing them down.
_CLOSED = (InstanceStatus.TERMINATING, InstanceStatus.TERMINATED, InstanceStatus.FAILED)
_BEARER = "Bearer "

# Bytes of a data volume: clouds sell up to a few hundred TB.
_MAX_BYTES = 10**15
# The machine's figures an agent reports (worker/agent.py), kept together as the instance's telemetry.
TELEMETRY = {
    "gpu_count": FieldSpec("int", nullable=True, minimum=0, maximum=64, description="GPUs nvidia-smi lists"),
    "gpu_utilization_pct": FieldSpec("int", nullable=True, minimum=0, maximum=100,
                                     description="mean utilisation of the GPUs, percent"),
    "gpu_memory_used_mib": FieldSpec("int", nullable=True, minimum=0, maximum=INT4_MAX,
                                     description="memory used on all GPUs, MiB"),
    "gpu_memory_total_mib": FieldSpec("int", nullable=True, minimum=0, maximum=INT4_MAX,
                                      description="memory of all GPUs, MiB"),
    "disk_used_bytes": FieldSpec("int", nullable=True, minimum=0, maximum=_MAX_BYTES,
                                 description="bytes used on the data volume (or the root disk without one)"),
    "disk_total_bytes": FieldSpec("int", nullable=True, minimum=0, maximum=_MAX_BYTES,
                                  description="size of that disk, bytes"),
}  # fmt: skip
TELEMETRY_FIELDS = tuple(TELEMETRY)

BODY = {
    "instance_id": FieldSpec("uuid", required=True),
    "worker_status": FieldSpec("str", required=True, choices=WORKER_STATUSES),
    "model_id": FieldSpec("str", nullable=True, max_length=500, description="the model the worker serves"),
    "queue_depth": FieldSpec("int", nullable=True, minimum=0, maximum=INT4_MAX,
                             description="requests waiting (and running) on the worker"),
    **TELEMETRY,
}


def _presented_token(authorization: str | None) -> str:
    if not authorization or not authorization.startswith(_BEARER) or not authorization[len(_BEARER):].strip():
        raise ApiError(
            401, "Missing worker token: send 'Authorization: Bearer <worker token>'.", ErrorCode.MISSING_WORKER_TOKEN
        )
    return authorization[len(_BEARER):].strip()


async def record_heartbeat(request: web.Request) -> web.Response:
    token = _presented_token(request.headers.get("Authorization"))
    body = check_body(await read_json_object(request), BODY)
    instance_id = body["instance_id"]
    async with request.app[state.DB].acquire() as conn:
        instance = await queries.instances.get_instance_status(conn, instance_id=instance_id)
        # Unknown instance and wrong secret answer alike, so the endpoint reveals no instance ids.
        if instance is None or not request.app[state.WORKER_SECRETS].matches(instance_id, token):
            raise ApiError(401, "Invalid worker token for this instance.", ErrorCode.INVALID_WORKER_TOKEN)
        if instance["status"] in _CLOSED:
            raise ApiError(409, f"The instance is {instance['status']}; heartbeats are no longer accepted.",
                           ErrorCode.INSTANCE_CLOSED, "instance_id")
        telemetry = {name: body[name] for name in TELEMETRY_FIELDS if name in body}
        row = await queries.instances.record_worker_heartbeat(
            conn,
            instance_id=instance_id,
            worker_status=body["worker_status"],
            worker_model_id=body.get("model_id"),
            worker_queue_depth=body.get("queue_depth"),
            telemetry=dumps(telemetry).decode() if telemetry else None,
        )
    await notify.publish_change(
        request.app[state.REDIS], request.app[state.SETTINGS], redis_keys.WORKERS_CHANGED, instance_id
    )
    return json_response({"object": "worker_heartbeat", "instance_id": instance_id,
                          **{k: v for k, v in row.items() if k != "id"}})
