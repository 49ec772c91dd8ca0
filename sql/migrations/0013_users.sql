-- People who sign in to the console with an email and a password. A user acts as an admin of its
-- organization, under the same rules as an admin API key (gateway/control/access.py).
CREATE TABLE users (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    -- Stored lower-cased: one person, one account, whatever case they type.
    email          text NOT NULL UNIQUE CHECK (email = lower(email) AND email LIKE '%_@_%'),
    -- argon2id, in its own encoded form (parameters and salt included).
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    disabled_at    timestamptz
);
CREATE INDEX users_organization_idx ON users (organization_id);
