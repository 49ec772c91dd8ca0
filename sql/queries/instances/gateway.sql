-- name: list-routable-workers()
-- The gateway's ready-worker view, read every second by every gateway process (instances_live_idx).
-- Heartbeat freshness is checked at pick time, in the gateway, so it is returned rather than filtered.
SELECT id, model_id, ip_address, worker_port, worker_model_id, worker_queue_depth, organization_id,
       extract(epoch FROM worker_last_heartbeat_at)::float8 AS heartbeat_at
FROM instances
WHERE status = 'ready' AND worker_status = 'ready'
  AND ip_address IS NOT NULL AND worker_port IS NOT NULL AND model_id IS NOT NULL
  AND worker_last_heartbeat_at IS NOT NULL;
