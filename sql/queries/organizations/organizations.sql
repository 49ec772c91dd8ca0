-- name: get-organization-by-slug(slug)^
SELECT id, slug, name, created_at FROM organizations WHERE slug = :slug;

-- name: get-organization-by-id(organization_id)^
SELECT id, slug, name, created_at FROM organizations WHERE id = :organization_id;

-- name: list-organizations()
SELECT id, slug, name, created_at FROM organizations ORDER BY slug;
