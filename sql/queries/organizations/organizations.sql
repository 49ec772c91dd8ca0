-- An organization as the control API shows it: its limits and quotas with it. Platform organizations
-- (access.py) are the flagged ones and the oldest one.

-- name: get-organization-by-slug(slug)^
SELECT id, slug, name, created_at FROM organizations WHERE slug = :slug;

-- name: insert-organization(slug, name, is_platform)^
-- A taken slug inserts nothing and returns no row.
INSERT INTO organizations (slug, name, is_platform) VALUES (:slug, :name, :is_platform)
ON CONFLICT (slug) DO NOTHING
RETURNING id;

-- name: list-organization-details(organization_id, after_slug, limit)
-- organization_id NULL: every organization (a platform admin's view); else only that one.
SELECT o.id, o.slug, o.name, o.is_platform OR o.id = (SELECT id FROM organizations ORDER BY created_at, id LIMIT 1)
           AS is_platform,
       o.requests_per_minute, o.tokens_per_minute, o.concurrent_requests,
       o.max_instances, o.max_gpus, o.monthly_budget, o.created_at, o.updated_at
FROM organizations o
WHERE (:organization_id::uuid IS NULL OR o.id = :organization_id)
  AND (:after_slug::text IS NULL OR o.slug > :after_slug)
ORDER BY o.slug
LIMIT :limit;

-- name: update-organization(organization_id, set_name, name, set_is_platform, is_platform, set_requests_per_minute, requests_per_minute, set_tokens_per_minute, tokens_per_minute, set_concurrent_requests, concurrent_requests, set_max_instances, max_instances, set_max_gpus, max_gpus, set_monthly_budget, monthly_budget)^
-- set_<field> says whether the field was sent, so an explicit null (unlimited) differs from absent.
UPDATE organizations SET
    name = CASE WHEN :set_name::boolean THEN :name ELSE name END,
    is_platform = CASE WHEN :set_is_platform::boolean THEN :is_platform::boolean ELSE is_platform END,
    requests_per_minute = CASE WHEN :set_requests_per_minute::boolean THEN :requests_per_minute::integer
                          ELSE requests_per_minute END,
    tokens_per_minute = CASE WHEN :set_tokens_per_minute::boolean THEN :tokens_per_minute::integer
                        ELSE tokens_per_minute END,
    concurrent_requests = CASE WHEN :set_concurrent_requests::boolean THEN :concurrent_requests::integer
                          ELSE concurrent_requests END,
    max_instances = CASE WHEN :set_max_instances::boolean THEN :max_instances::integer ELSE max_instances END,
    max_gpus = CASE WHEN :set_max_gpus::boolean THEN :max_gpus::integer ELSE max_gpus END,
    monthly_budget = CASE WHEN :set_monthly_budget::boolean THEN :monthly_budget::numeric ELSE monthly_budget END,
    updated_at = now()
WHERE id = :organization_id
RETURNING id;

-- name: lock-organization-quotas(organization_id)^
-- Taken in the deployment's transaction: two concurrent deployments of one organization queue here, so
-- the second counts the first's instance and both cannot pass a quota at its last unit.
SELECT max_instances, max_gpus, monthly_budget FROM organizations WHERE id = :organization_id FOR UPDATE;

-- name: get-organization-spending(organization_id, instance_type_id)^
-- Live instances and their GPUs, and this calendar month's (UTC) spend: each instance's cost_per_hour
-- times the hours of its life within the month: created_at to terminated_at (to its last update when it
-- ended without one), or to now while alive. requested_gpus: the GPUs of instance_type_id (NULL: none).
WITH month AS (SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS start)
SELECT (SELECT gpu_count FROM instance_types WHERE id = :instance_type_id::uuid) AS requested_gpus,
       count(*) FILTER (WHERE i.status NOT IN ('terminated', 'failed')) AS live_instances,
       coalesce(sum(t.gpu_count) FILTER (WHERE i.status NOT IN ('terminated', 'failed')), 0) AS live_gpus,
       coalesce(sum(t.cost_per_hour * extract(epoch FROM
           greatest(interval '0', least(coalesce(i.terminated_at, CASE WHEN i.status IN ('terminated', 'failed') THEN i.updated_at END,
                                                 now()), now())
                                  - greatest(i.created_at, month.start))) / 3600), 0)::numeric(14, 4) AS month_spend
FROM instances i
JOIN instance_types t ON t.id = i.instance_type_id
CROSS JOIN month
WHERE i.organization_id = :organization_id
  AND (i.status NOT IN ('terminated', 'failed') OR coalesce(i.terminated_at, i.updated_at) >= month.start);
