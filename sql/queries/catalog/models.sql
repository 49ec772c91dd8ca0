-- name: list-catalog-models(is_active, after_hf_repo_id, limit)
SELECT id, name, hf_repo_id, is_active, parameter_count, context_length, data_volume_gb, created_at, updated_at
FROM models
WHERE (:is_active::boolean IS NULL OR is_active = :is_active)
  AND (:after_hf_repo_id::text IS NULL OR hf_repo_id > :after_hf_repo_id)
ORDER BY hf_repo_id
LIMIT :limit;

-- name: get-catalog-model(model_id)^
SELECT id, name, hf_repo_id, is_active, parameter_count, context_length, data_volume_gb, created_at, updated_at
FROM models WHERE id = :model_id;

-- name: insert-catalog-model(name, hf_repo_id, is_active, parameter_count, context_length, data_volume_gb)^
-- A taken hf_repo_id inserts nothing and returns no row (the API answers 409).
INSERT INTO models (name, hf_repo_id, is_active, parameter_count, context_length, data_volume_gb)
VALUES (:name, :hf_repo_id, :is_active, :parameter_count, :context_length, :data_volume_gb)
ON CONFLICT (hf_repo_id) DO NOTHING
RETURNING id, name, hf_repo_id, is_active, parameter_count, context_length, data_volume_gb, created_at, updated_at;

-- name: update-catalog-model(model_id, set_name, name, set_is_active, is_active, set_parameter_count, parameter_count, set_context_length, context_length, set_data_volume_gb, data_volume_gb)^
-- set_<field> says whether the field was sent, so an explicit null (data_volume_gb) differs from absent.
UPDATE models SET
    name = CASE WHEN :set_name::boolean THEN :name ELSE name END,
    is_active = CASE WHEN :set_is_active::boolean THEN :is_active::boolean ELSE is_active END,
    parameter_count = CASE WHEN :set_parameter_count::boolean THEN :parameter_count::bigint ELSE parameter_count END,
    context_length = CASE WHEN :set_context_length::boolean THEN :context_length::integer ELSE context_length END,
    data_volume_gb = CASE WHEN :set_data_volume_gb::boolean THEN :data_volume_gb::integer ELSE data_volume_gb END,
    updated_at = now()
WHERE id = :model_id
RETURNING id, name, hf_repo_id, is_active, parameter_count, context_length, data_volume_gb, created_at, updated_at;
