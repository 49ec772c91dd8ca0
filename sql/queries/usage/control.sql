-- Usage sums for GET /usage over [from_ts, to_ts). model matches the requested name or the model id.

-- name: sum-usage(organization_id, model, from_ts, to_ts, group_by)
-- group_by is 'day', 'model', 'instance' or 'key': the key columns of the other groupings are NULL (one group),
-- so one query serves the four reports with the same filter and sums.
SELECT CASE WHEN :group_by::text = 'day' THEN (date_trunc('day', u.created_at AT TIME ZONE 'UTC'))::date END AS day,
       CASE WHEN :group_by::text = 'model' THEN u.model_id END AS model_id,
       CASE WHEN :group_by::text = 'model' THEN u.model END AS model,
       CASE WHEN :group_by::text = 'instance' THEN u.instance_id END AS instance_id,
       CASE WHEN :group_by::text = 'key' THEN u.api_key_id END AS api_key_id,
       CASE WHEN :group_by::text = 'key' THEN k.name END AS api_key_name,
       count(*) AS requests,
       count(*) FILTER (WHERE u.status = 'success') AS successful_requests,
       coalesce(sum(u.prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(u.completion_tokens), 0)::bigint AS completion_tokens,
       coalesce(sum(u.total_tokens), 0)::bigint AS total_tokens
FROM finops.inference_usage u
LEFT JOIN api_keys k ON k.id = u.api_key_id AND :group_by::text = 'key'
WHERE u.organization_id = :organization_id::uuid
  AND u.created_at >= :from_ts::timestamptz AND u.created_at < :to_ts::timestamptz
  AND (:model::text IS NULL OR u.model = :model OR u.model_id::text = :model)
GROUP BY 1, 2, 3, 4, 5, 6
ORDER BY day, total_tokens DESC, model, instance_id NULLS LAST, api_key_name;
