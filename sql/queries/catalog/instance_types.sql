-- name: list-catalog-instance-types(provider, zone, is_active, after_provider_code, after_code, limit)
-- Each type with its availability in every zone it is offered in; zone filters on types offered there.
SELECT t.id, t.provider_id, p.code AS provider_code, t.code, t.name, t.gpu_count, t.gpu_model, t.vram_gb_per_gpu,
       t.cpu_count, t.ram_gb, t.cost_per_hour, t.worker_port, t.allocation_params, t.is_active, t.created_at,
       coalesce((
           SELECT json_agg(json_build_object('zone_id', z.id, 'zone_code', z.code,
                                             'is_available', tz.is_available AND z.is_active) ORDER BY z.code)
           FROM instance_type_zones tz JOIN zones z ON z.id = tz.zone_id
           WHERE tz.instance_type_id = t.id
       ), '[]'::json) AS zones
FROM instance_types t JOIN providers p ON p.id = t.provider_id
WHERE (:provider::text IS NULL OR p.id::text = :provider OR p.code = :provider)
  AND (:is_active::boolean IS NULL OR t.is_active = :is_active)
  AND (:zone::text IS NULL OR EXISTS (
        SELECT 1 FROM instance_type_zones tz JOIN zones z ON z.id = tz.zone_id
        WHERE tz.instance_type_id = t.id AND (z.id::text = :zone OR z.code = :zone)))
  AND (:after_code::text IS NULL OR (p.code, t.code) > (:after_provider_code, :after_code))
ORDER BY p.code, t.code
LIMIT :limit;

-- name: get-catalog-instance-type(instance_type_id)^
SELECT t.id, t.provider_id, p.code AS provider_code, t.code, t.worker_port, t.is_active
FROM instance_types t JOIN providers p ON p.id = t.provider_id
WHERE t.id = :instance_type_id;

-- name: get-instance-type-zone-offer(instance_type_id, zone_id)^
SELECT instance_type_id, zone_id, is_available
FROM instance_type_zones WHERE instance_type_id = :instance_type_id AND zone_id = :zone_id;
