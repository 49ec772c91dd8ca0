-- What `inventiv cloud check` looks at: the catalog's providers and, per provider, the zones to check.

-- name: list-check-providers()
-- Every provider, and how many live instances (cleanup not finished) use it: an unreachable provider
-- fails the check only when some do.
SELECT p.code, p.is_active, count(i.id) FILTER (WHERE i.deleted_at IS NULL) AS live_instances
FROM providers p
LEFT JOIN instances i ON i.provider_id = p.id
GROUP BY p.id, p.code, p.is_active
ORDER BY p.code;

-- name: list-check-zones()
-- Active zones, and zones where an instance ever asked for a server (create_requested_at, as the orphan
-- sweep reads it), each with the active types the catalog offers there (none in an inactive zone).
SELECT p.code AS provider_code, z.code AS zone_code, z.is_active,
       coalesce(array_agg(t.code ORDER BY t.code) FILTER (WHERE t.id IS NOT NULL), '{}') AS offered_types
FROM zones z
JOIN providers p ON p.id = z.provider_id
LEFT JOIN instance_type_zones tz ON tz.zone_id = z.id AND tz.is_available AND z.is_active
LEFT JOIN instance_types t ON t.id = tz.instance_type_id AND t.is_active
WHERE z.is_active OR EXISTS (SELECT 1 FROM instances i WHERE i.zone_id = z.id AND i.create_requested_at IS NOT NULL)
GROUP BY p.code, z.code, z.is_active
ORDER BY 1, 2;
