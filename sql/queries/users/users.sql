-- name: insert-user(organization_id, email, password_hash)^
INSERT INTO users (organization_id, email, password_hash)
VALUES (:organization_id, :email, :password_hash)
ON CONFLICT (email) DO NOTHING
RETURNING id, organization_id, email, created_at;

-- name: get-user-for-sign-in(email)^
SELECT u.id, u.organization_id, o.slug AS organization_slug, u.email, u.password_hash
FROM users u JOIN organizations o ON o.id = u.organization_id
WHERE u.email = :email AND u.disabled_at IS NULL;

-- name: update-user-password-hash(user_id, password_hash)!
UPDATE users SET password_hash = :password_hash WHERE id = :user_id;

-- name: count-users(organization_id)$
SELECT count(*) FROM users WHERE organization_id = :organization_id;
