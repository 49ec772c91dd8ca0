-- Worker secrets are derived from one server-side key (inventiv/worker_secrets.py), so no token hash is
-- stored any more. What the hash also told (a server was asked for in this instance's zone, so the
-- orphan sweep must look there) is now its own column.
ALTER TABLE instances ADD COLUMN create_requested_at timestamptz;
UPDATE instances SET create_requested_at = created_at WHERE worker_token_hash IS NOT NULL;
ALTER TABLE instances DROP COLUMN worker_token_hash;
