-- name: list-catalog-offerings(offering_id, organization_id, model_id, is_active, visibility, after_organization_slug, after_model_code, limit)
-- Every filter is optional (NULL: any); offering_id narrows the list to one offering.
SELECT f.id, f.organization_id, o.slug AS organization_slug, f.model_id, m.hf_repo_id AS model_hf_repo_id,
       f.model_code, o.slug || '/' || f.model_code AS name, f.visibility, f.is_active, f.created_at, f.updated_at,
       coalesce((SELECT array_agg(g.organization_id ORDER BY g.organization_id)
                 FROM offering_grants g WHERE g.offering_id = f.id), '{}'::uuid[]) AS granted_organization_ids
FROM offerings f
JOIN organizations o ON o.id = f.organization_id
JOIN models m ON m.id = f.model_id
WHERE (:offering_id::uuid IS NULL OR f.id = :offering_id)
  AND (:organization_id::uuid IS NULL OR f.organization_id = :organization_id)
  AND (:model_id::uuid IS NULL OR f.model_id = :model_id)
  AND (:is_active::boolean IS NULL OR f.is_active = :is_active)
  AND (:visibility::text IS NULL OR f.visibility = :visibility)
  AND (:after_model_code::text IS NULL OR (o.slug, f.model_code) > (:after_organization_slug, :after_model_code))
ORDER BY o.slug, f.model_code
LIMIT :limit;

-- name: insert-catalog-offering(organization_id, model_id, model_code, visibility, is_active)$
-- A taken (organization, model_code) inserts nothing and returns NULL (the API answers 409).
INSERT INTO offerings (organization_id, model_id, model_code, visibility, is_active)
VALUES (:organization_id, :model_id, :model_code, :visibility, :is_active)
ON CONFLICT (organization_id, model_code) DO NOTHING
RETURNING id;

-- name: update-catalog-offering(offering_id, is_active, visibility)!
-- NULL leaves a field as it is (neither field is nullable).
UPDATE offerings SET
    is_active = coalesce(:is_active::boolean, is_active),
    visibility = coalesce(:visibility::text, visibility),
    updated_at = now()
WHERE id = :offering_id;

-- name: replace-offering-grants(offering_id, organization_ids)!
-- The full set of organizations a private offering is granted to.
WITH dropped AS (
    DELETE FROM offering_grants WHERE offering_id = :offering_id
      AND organization_id <> ALL(:organization_ids::uuid[])
)
INSERT INTO offering_grants (offering_id, organization_id)
SELECT :offering_id, unnest(:organization_ids::uuid[])
ON CONFLICT DO NOTHING;
