-- name: insert-api-action-log(instance_id, action_type, metadata)!
-- What the API did on an operator's request: done when written, hence success and completed.
INSERT INTO action_logs (instance_id, action_type, component, status, metadata, duration_ms, completed_at)
VALUES (:instance_id, :action_type, 'api', 'success', coalesce(:metadata::jsonb, '{}'::jsonb), 0, now());

-- name: list-visible-action-logs(organization_id, instance_id, action_type, status, component, after_created_at, after_id, limit)
-- Logs of the key's organization's instances, of instances with no organization, and of no instance.
SELECT a.id, a.instance_id, a.action_type, a.component, a.status, a.error_code, a.error_message, a.metadata,
       a.duration_ms, a.created_at, a.completed_at
FROM action_logs a
LEFT JOIN instances i ON i.id = a.instance_id
WHERE (a.instance_id IS NULL OR i.organization_id IS NULL OR i.organization_id = :organization_id::uuid)
  AND (:instance_id::uuid IS NULL OR a.instance_id = :instance_id)
  AND (:action_type::text IS NULL OR a.action_type = :action_type)
  AND (:status::text IS NULL OR a.status = :status)
  AND (:component::text IS NULL OR a.component = :component)
  AND (:after_created_at::timestamptz IS NULL OR (a.created_at, a.id) < (:after_created_at, :after_id::uuid))
ORDER BY a.created_at DESC, a.id DESC
LIMIT :limit;
