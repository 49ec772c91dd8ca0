-- What `inventiv volumes verify` compares with the cloud: the live instances (cleanup not finished,
-- deleted_at unset, as the orphan sweep and the cloud check count them), or the one instance asked for
-- whatever its status (`live` says whether it counts as one), and all their tracking rows (deleted ones
-- too: a row marked deleted still says the volume was ours, so the cloud still listing it is not an
-- untracked volume).

-- name: list-verify-instances(instance_id)
SELECT i.id, i.status, p.code AS provider_code, z.code AS zone_code, i.provider_instance_id,
       i.data_volume_delete_on_terminate, i.deleted_at IS NULL AS live
FROM instances i
JOIN providers p ON p.id = i.provider_id
JOIN zones z ON z.id = i.zone_id
WHERE CASE WHEN :instance_id::uuid IS NULL THEN i.deleted_at IS NULL ELSE i.id = :instance_id::uuid END
ORDER BY p.code, z.code, i.created_at, i.id;

-- name: list-verify-volumes(instance_id)
SELECT v.instance_id, v.provider_volume_id, v.name, v.volume_type, v.size_bytes, v.slot, v.is_boot,
       v.delete_on_terminate, v.attached_at, v.detached_at, v.deleted_at
FROM instance_volumes v
JOIN instances i ON i.id = v.instance_id
WHERE CASE WHEN :instance_id::uuid IS NULL THEN i.deleted_at IS NULL ELSE i.id = :instance_id::uuid END
ORDER BY v.instance_id, v.is_boot DESC, v.created_at, v.id;
