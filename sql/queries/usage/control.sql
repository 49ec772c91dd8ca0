-- Usage sums for GET /usage over [from_ts, to_ts). model matches the requested name or the model id.

-- name: sum-usage-by-day(organization_id, model, from_ts, to_ts)
SELECT (date_trunc('day', u.created_at AT TIME ZONE 'UTC'))::date AS day,
       count(*) AS requests,
       count(*) FILTER (WHERE u.status = 'success') AS successful_requests,
       coalesce(sum(u.prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(u.completion_tokens), 0)::bigint AS completion_tokens,
       coalesce(sum(u.total_tokens), 0)::bigint AS total_tokens
FROM finops.inference_usage u
WHERE u.organization_id = :organization_id::uuid
  AND u.created_at >= :from_ts::timestamptz AND u.created_at < :to_ts::timestamptz
  AND (:model::text IS NULL OR u.model = :model OR u.model_id::text = :model)
GROUP BY 1
ORDER BY 1;

-- name: sum-usage-by-model(organization_id, model, from_ts, to_ts)
SELECT u.model_id, u.model,
       count(*) AS requests,
       count(*) FILTER (WHERE u.status = 'success') AS successful_requests,
       coalesce(sum(u.prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(u.completion_tokens), 0)::bigint AS completion_tokens,
       coalesce(sum(u.total_tokens), 0)::bigint AS total_tokens
FROM finops.inference_usage u
WHERE u.organization_id = :organization_id::uuid
  AND u.created_at >= :from_ts::timestamptz AND u.created_at < :to_ts::timestamptz
  AND (:model::text IS NULL OR u.model = :model OR u.model_id::text = :model)
GROUP BY u.model_id, u.model
ORDER BY total_tokens DESC, u.model;

-- name: sum-usage-by-instance(organization_id, model, from_ts, to_ts)
SELECT u.instance_id,
       count(*) AS requests,
       count(*) FILTER (WHERE u.status = 'success') AS successful_requests,
       coalesce(sum(u.prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(u.completion_tokens), 0)::bigint AS completion_tokens,
       coalesce(sum(u.total_tokens), 0)::bigint AS total_tokens
FROM finops.inference_usage u
WHERE u.organization_id = :organization_id::uuid
  AND u.created_at >= :from_ts::timestamptz AND u.created_at < :to_ts::timestamptz
  AND (:model::text IS NULL OR u.model = :model OR u.model_id::text = :model)
GROUP BY u.instance_id
ORDER BY total_tokens DESC, u.instance_id NULLS LAST;
