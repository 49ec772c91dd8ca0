-- name: insert-api-key(organization_id, name, key_prefix, key_hash, scopes)<!
INSERT INTO api_keys (organization_id, name, key_prefix, key_hash, scopes)
VALUES (:organization_id, :name, :key_prefix, :key_hash, :scopes)
RETURNING id, organization_id, name, key_prefix, scopes, created_at, last_used_at, revoked_at;

-- name: list-active-api-keys()
-- The gateway's in-memory key table: every key that may authenticate right now.
SELECT k.id, k.key_hash, k.organization_id, o.slug AS organization_slug, k.scopes
FROM api_keys k JOIN organizations o ON o.id = k.organization_id
WHERE k.revoked_at IS NULL;

-- name: list-api-keys(organization_id, after_created_at, after_id, limit)
SELECT id, organization_id, name, key_prefix, scopes, created_at, last_used_at, revoked_at
FROM api_keys
WHERE (:organization_id::uuid IS NULL OR organization_id = :organization_id)
  AND (:after_created_at::timestamptz IS NULL OR (created_at, id) < (:after_created_at, :after_id::uuid))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: get-api-key(key_id)^
SELECT id, organization_id, name, key_prefix, scopes, created_at, last_used_at, revoked_at
FROM api_keys WHERE id = :key_id;

-- name: revoke-api-key(key_id)^
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE id = :key_id
RETURNING id, organization_id, name, key_prefix, scopes, created_at, last_used_at, revoked_at;

-- name: touch-api-keys(key_ids)!
-- last_used_at is written in batches from the usage writer, never per request.
UPDATE api_keys SET last_used_at = now() WHERE id = ANY(:key_ids::uuid[]);

-- name: count-admin-keys(organization_id)$
SELECT count(*) FROM api_keys
WHERE organization_id = :organization_id AND 'admin' = ANY(scopes) AND revoked_at IS NULL;
