-- name: list-models-for-routing()
-- The gateway's model table, inactive ones included so that naming one answers 404 with a reason.
SELECT id, hf_repo_id, is_active FROM models;
