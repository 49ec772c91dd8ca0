-- The control API's reads and writes of instances. Rows are shown with their catalog codes.
-- Visibility: an admin key sees its organization's instances and those with no organization (see
-- gateway/control/access.py).

-- name: insert-requested-instance(provider_id, zone_id, instance_type_id, model_id, organization_id, worker_port, data_volume_gb, data_volume_delete_on_terminate, replace_on_failure, idempotency_key, deadline_s)^
-- A repeated idempotency key inserts nothing and returns no row: the caller then reads the first one.
INSERT INTO instances (provider_id, zone_id, instance_type_id, model_id, organization_id, status, worker_port,
                       data_volume_gb, data_volume_delete_on_terminate, idempotency_key, provisioning_deadline_at,
                       engine, replace_on_failure)
VALUES (:provider_id, :zone_id, :instance_type_id, :model_id, :organization_id, 'provisioning', :worker_port,
        :data_volume_gb, :data_volume_delete_on_terminate, :idempotency_key,
        now() + make_interval(secs => :deadline_s::float8),
        coalesce((SELECT engine FROM models WHERE id = :model_id), 'vllm'), :replace_on_failure)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id;

-- name: get-instance-request-by-idempotency-key(idempotency_key)^
SELECT id, instance_type_id, zone_id, model_id, data_volume_gb, data_volume_delete_on_terminate
FROM instances WHERE idempotency_key = :idempotency_key;

-- name: list-visible-instances(organization_id, instance_id, status, model, provider, zone, after_created_at, after_id, limit)
-- Every filter is optional (NULL: any). instance_id narrows the list to one instance (GET /instances/{id});
-- model, provider and zone match an id or a code (hf_repo_id for models).
SELECT i.id, i.status, i.organization_id, i.provider_id, p.code AS provider_code, i.zone_id, z.code AS zone_code,
       i.instance_type_id, t.code AS instance_type_code, i.model_id, m.hf_repo_id AS model_hf_repo_id,
       i.provider_instance_id, i.provider_instance_name, i.ip_address, i.worker_port, i.worker_status,
       i.worker_model_id, i.worker_queue_depth, i.worker_last_heartbeat_at, i.worker_consecutive_failures,
       i.engine, i.agent_heartbeat_at, i.worker_telemetry, i.data_volume_gb, i.data_volume_delete_on_terminate, i.error_code, i.error_message, i.provisioning_deadline_at,
       i.replace_on_failure, i.replaces_instance_id,
       i.created_at, i.updated_at, i.ready_at, i.terminating_at, i.terminated_at
FROM instances i
JOIN providers p ON p.id = i.provider_id
JOIN zones z ON z.id = i.zone_id
JOIN instance_types t ON t.id = i.instance_type_id
LEFT JOIN models m ON m.id = i.model_id
WHERE (i.organization_id IS NULL OR i.organization_id = :organization_id::uuid)
  AND (:instance_id::uuid IS NULL OR i.id = :instance_id)
  AND (:status::text IS NULL OR i.status = :status)
  AND (:model::text IS NULL OR i.model_id::text = :model OR m.hf_repo_id = :model)
  AND (:provider::text IS NULL OR p.id::text = :provider OR p.code = :provider)
  AND (:zone::text IS NULL OR z.id::text = :zone OR z.code = :zone)
  AND (:after_created_at::timestamptz IS NULL OR (i.created_at, i.id) < (:after_created_at, :after_id::uuid))
ORDER BY i.created_at DESC, i.id DESC
LIMIT :limit;

-- name: lock-visible-instance(instance_id, organization_id)^
SELECT id, status FROM instances
WHERE id = :instance_id AND (organization_id IS NULL OR organization_id = :organization_id::uuid)
FOR UPDATE;

-- name: mark-instance-terminating(instance_id)!
UPDATE instances
SET status = 'terminating', terminating_at = coalesce(terminating_at, now()), updated_at = now()
WHERE id = :instance_id;

-- name: get-instance-status(instance_id)^
SELECT id, status FROM instances WHERE id = :instance_id;

-- name: record-worker-heartbeat(instance_id, worker_status, worker_model_id, worker_queue_depth, telemetry)^
-- A field the worker left out keeps its value; a heartbeat always resets the failure count, and while
-- they keep coming the scheduler leaves the worker to its agent (list-instances-to-probe).
UPDATE instances
SET worker_status = :worker_status,
    worker_model_id = coalesce(:worker_model_id, worker_model_id),
    worker_queue_depth = coalesce(:worker_queue_depth, worker_queue_depth),
    worker_last_heartbeat_at = now(),
    worker_consecutive_failures = 0,
    agent_heartbeat_at = now(),
    worker_telemetry = coalesce(:telemetry::jsonb, worker_telemetry),
    updated_at = now()
WHERE id = :instance_id
RETURNING id, worker_status, worker_model_id, worker_queue_depth, worker_last_heartbeat_at, worker_telemetry;
