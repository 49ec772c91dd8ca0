-- name: list-offerings-for-routing()
-- The gateway's offering table with the organizations each private offering is granted to.
SELECT f.id, o.slug AS org_slug, f.organization_id, f.model_code, f.model_id, f.visibility, f.is_active,
       coalesce(array_agg(g.organization_id) FILTER (WHERE g.organization_id IS NOT NULL), '{}') AS granted
FROM offerings f
JOIN organizations o ON o.id = f.organization_id
LEFT JOIN offering_grants g ON g.offering_id = f.id
GROUP BY f.id, o.slug;
