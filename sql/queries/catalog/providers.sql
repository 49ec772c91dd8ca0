-- name: list-catalog-providers(after_code, limit)
SELECT p.id, p.code, p.name, p.is_active, p.created_at, s.worker_data_volume_gb_default
FROM providers p LEFT JOIN provider_settings s ON s.provider_id = p.id
WHERE (:after_code::text IS NULL OR p.code > :after_code)
ORDER BY p.code
LIMIT :limit;
