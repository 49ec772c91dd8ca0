-- name: list-volumes-of-instances(instance_ids)
-- Every tracked volume of a page of instances, deleted ones included (the API counts only live ones).
SELECT instance_id, id, provider_volume_id, name, volume_type, size_bytes, slot, is_boot, delete_on_terminate,
       created_at, attached_at, detached_at, deleted_at
FROM instance_volumes
WHERE instance_id = ANY(:instance_ids::uuid[])
ORDER BY instance_id, is_boot DESC, created_at, id;
