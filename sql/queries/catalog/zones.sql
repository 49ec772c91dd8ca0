-- name: list-catalog-zones(provider, is_active, after_provider_code, after_code, limit)
-- provider matches an id or a code.
SELECT z.id, z.provider_id, p.code AS provider_code, z.code, z.name, z.is_active, z.created_at
FROM zones z JOIN providers p ON p.id = z.provider_id
WHERE (:provider::text IS NULL OR p.id::text = :provider OR p.code = :provider)
  AND (:is_active::boolean IS NULL OR z.is_active = :is_active)
  AND (:after_code::text IS NULL OR (p.code, z.code) > (:after_provider_code, :after_code))
ORDER BY p.code, z.code
LIMIT :limit;

-- name: get-catalog-zone(zone_id)^
SELECT z.id, z.provider_id, p.code AS provider_code, z.code, z.is_active
FROM zones z JOIN providers p ON p.id = z.provider_id
WHERE z.id = :zone_id;
