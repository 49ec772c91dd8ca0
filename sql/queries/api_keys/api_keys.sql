-- name: insert-api-key(organization_id, name, key_prefix, key_hash, scopes)<!
INSERT INTO api_keys (organization_id, name, key_prefix, key_hash, scopes)
VALUES (:organization_id, :name, :key_prefix, :key_hash, :scopes)
RETURNING id, organization_id, name, key_prefix, scopes, created_at, last_used_at, revoked_at,
       requests_per_minute, tokens_per_minute, concurrent_requests, limits_fail_mode;

-- name: list-active-api-keys()
-- The gateway's in-memory key table: every key that may authenticate right now.
-- With the key's and its organization's rate limits (NULL: none), so limits travel with the key table.
SELECT k.id, k.key_hash, k.organization_id, o.slug AS organization_slug, k.scopes,
       k.requests_per_minute, k.tokens_per_minute, k.concurrent_requests, k.limits_fail_mode,
       o.requests_per_minute AS org_requests_per_minute, o.tokens_per_minute AS org_tokens_per_minute,
       o.concurrent_requests AS org_concurrent_requests,
       o.is_platform OR o.id = (SELECT id FROM organizations ORDER BY created_at, id LIMIT 1) AS organization_is_platform
FROM api_keys k JOIN organizations o ON o.id = k.organization_id
WHERE k.revoked_at IS NULL;

-- name: list-api-keys(organization_id, after_created_at, after_id, limit)
SELECT id, organization_id, name, key_prefix, scopes, created_at, last_used_at, revoked_at,
       requests_per_minute, tokens_per_minute, concurrent_requests, limits_fail_mode
FROM api_keys
WHERE (:organization_id::uuid IS NULL OR organization_id = :organization_id)
  AND (:after_created_at::timestamptz IS NULL OR (created_at, id) < (:after_created_at, :after_id::uuid))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: get-api-key(key_id)^
SELECT id, organization_id, name, key_prefix, scopes, created_at, last_used_at, revoked_at,
       requests_per_minute, tokens_per_minute, concurrent_requests, limits_fail_mode
FROM api_keys WHERE id = :key_id;

-- name: revoke-api-key(key_id)^
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE id = :key_id
RETURNING id, organization_id, name, key_prefix, scopes, created_at, last_used_at, revoked_at,
       requests_per_minute, tokens_per_minute, concurrent_requests, limits_fail_mode;

-- name: count-admin-keys(organization_id)$
SELECT count(*) FROM api_keys
WHERE organization_id = :organization_id AND 'admin' = ANY(scopes) AND revoked_at IS NULL;

-- name: update-api-key-limits(key_id, set_requests_per_minute, requests_per_minute, set_tokens_per_minute, tokens_per_minute, set_concurrent_requests, concurrent_requests, set_limits_fail_mode, limits_fail_mode)^
-- set_<field> says whether the field was sent, so an explicit null (unlimited) differs from absent.
UPDATE api_keys SET
    requests_per_minute = CASE WHEN :set_requests_per_minute::boolean THEN :requests_per_minute::integer
                          ELSE requests_per_minute END,
    tokens_per_minute = CASE WHEN :set_tokens_per_minute::boolean THEN :tokens_per_minute::integer
                        ELSE tokens_per_minute END,
    concurrent_requests = CASE WHEN :set_concurrent_requests::boolean THEN :concurrent_requests::integer
                          ELSE concurrent_requests END,
    limits_fail_mode = CASE WHEN :set_limits_fail_mode::boolean THEN :limits_fail_mode ELSE limits_fail_mode END
WHERE id = :key_id
RETURNING id, organization_id, name, key_prefix, scopes, created_at, last_used_at, revoked_at,
       requests_per_minute, tokens_per_minute, concurrent_requests, limits_fail_mode;
