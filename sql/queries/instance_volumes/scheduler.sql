-- The scheduler's tracking of every volume an instance uses: the boot volume, the data volume, and
-- anything else found attached. Rows are never deleted: deleted_at records when the cloud's volume went.

-- name: track-volume(instance_id, provider_volume_id, name, volume_type, size_bytes, slot, is_boot, delete_on_terminate, attached)!
-- Idempotent: tracking a volume again fills in what was unknown and keeps what was recorded.
INSERT INTO instance_volumes (instance_id, provider_volume_id, name, volume_type, size_bytes, slot, is_boot,
                              delete_on_terminate, attached_at)
VALUES (:instance_id, :provider_volume_id, :name, :volume_type, :size_bytes::bigint, :slot, :is_boot::boolean,
        :delete_on_terminate::boolean, CASE WHEN :attached::boolean THEN now() END)
ON CONFLICT (instance_id, provider_volume_id) DO UPDATE
SET name = coalesce(instance_volumes.name, EXCLUDED.name),
    size_bytes = coalesce(EXCLUDED.size_bytes, instance_volumes.size_bytes),
    slot = coalesce(EXCLUDED.slot, instance_volumes.slot),
    attached_at = coalesce(instance_volumes.attached_at, EXCLUDED.attached_at);

-- name: mark-volume-attached(instance_id, provider_volume_id)!
UPDATE instance_volumes SET attached_at = coalesce(attached_at, now()), detached_at = NULL
WHERE instance_id = :instance_id AND provider_volume_id = :provider_volume_id;

-- name: mark-volume-detached(instance_id, provider_volume_id)!
UPDATE instance_volumes SET detached_at = coalesce(detached_at, now())
WHERE instance_id = :instance_id AND provider_volume_id = :provider_volume_id;

-- name: mark-volume-deleted(instance_id, provider_volume_id)!
UPDATE instance_volumes SET deleted_at = coalesce(deleted_at, now()), detached_at = coalesce(detached_at, now())
WHERE instance_id = :instance_id AND provider_volume_id = :provider_volume_id;

-- name: list-live-tracked-volume-ids()
-- Volumes the sweep must leave alone: tracked, not deleted, by an instance not yet cleaned up; kept
-- (persistent) volumes of finished instances too, since an operator asked for them to stay.
SELECT v.provider_volume_id
FROM instance_volumes v JOIN instances i ON i.id = v.instance_id
WHERE v.deleted_at IS NULL AND (i.deleted_at IS NULL OR NOT v.delete_on_terminate);

-- name: list-tracked-volumes-of-instances(instance_ids)
-- The tracked volumes of many instances in one statement (reconciliation reads every live instance's; a
-- step reads its instance's with the row, in get-instance-for-scheduler).
SELECT instance_id, provider_volume_id, name, volume_type, size_bytes, slot, is_boot, delete_on_terminate,
       attached_at, detached_at, deleted_at
FROM instance_volumes
WHERE instance_id = ANY(:instance_ids::uuid[])
ORDER BY instance_id, is_boot DESC, created_at, id;
