-- The scheduler's step log: a row opens `in_progress` when a step starts and is finished with its
-- outcome, duration and error; one-shot rows (sweeps, reconciliation) are written finished.

-- name: start-scheduler-action(instance_id, action_type, metadata)$
INSERT INTO action_logs (instance_id, action_type, component, status, metadata)
VALUES (:instance_id::uuid, :action_type, 'scheduler', 'in_progress', coalesce(:metadata::jsonb, '{}'))
RETURNING id;

-- name: finish-scheduler-action(action_id, status, error_code, error_message, metadata, duration_ms)!
UPDATE action_logs
SET status = :status, error_code = :error_code, error_message = :error_message,
    metadata = metadata || coalesce(:metadata::jsonb, '{}'), duration_ms = :duration_ms::integer,
    completed_at = now()
WHERE id = :action_id AND status = 'in_progress';

-- name: get-open-scheduler-action(instance_id, action_type)^
-- A long step (health checks until ready, a termination waiting on the cloud) spans many passes: its
-- row stays open and is found again here; elapsed_ms is measured from when it opened.
SELECT id, (extract(epoch FROM now() - created_at) * 1000)::integer AS elapsed_ms
FROM action_logs
WHERE instance_id = :instance_id AND action_type = :action_type AND component = 'scheduler'
  AND status = 'in_progress'
ORDER BY created_at DESC
LIMIT 1;

-- name: record-scheduler-action(instance_id, action_type, status, error_code, error_message, metadata, duration_ms)!
INSERT INTO action_logs (instance_id, action_type, component, status, error_code, error_message, metadata,
                         duration_ms, completed_at)
VALUES (:instance_id::uuid, :action_type, 'scheduler', :status, :error_code, :error_message,
        coalesce(:metadata::jsonb, '{}'), :duration_ms::integer, now());

-- name: close-interrupted-scheduler-actions(instance_id, span_types)!
-- A pass owns its instance (claimed), so a step row still open when the next pass starts belongs to a
-- scheduler that died during it. Spans (steps that outlive passes) stay open.
UPDATE action_logs
SET status = 'failed', error_code = 'INTERRUPTED', error_message = 'the scheduler stopped during this step',
    completed_at = now()
WHERE instance_id = :instance_id AND component = 'scheduler' AND status = 'in_progress'
  AND NOT (action_type = ANY(:span_types::text[]));
