-- What the gateway's routing tables were built from, as a version per table group, bumped by triggers
-- in the same transaction as the change. Every gateway process reads this one small table each
-- routing refresh and refetches a group only when its version moved: with 10,000 keys a refetch of the
-- key table cost a gateway process about 0.25 s of CPU, once a second, in one stall of its event loop.
CREATE TABLE routing_versions (
    name    text PRIMARY KEY,
    version bigint NOT NULL DEFAULT 0
);
INSERT INTO routing_versions (name) VALUES ('keys'), ('catalog');

CREATE FUNCTION bump_routing_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE routing_versions SET version = version + 1 WHERE name = TG_ARGV[0];
    RETURN NULL;
END;
$$;

-- keys: what list-active-api-keys reads. An UPDATE counts only when it sets one of those columns:
-- the usage writer's last_used_at, every half second, does not.
CREATE TRIGGER api_keys_routing_rows AFTER INSERT OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version('keys');
CREATE TRIGGER api_keys_routing_columns
    AFTER UPDATE OF id, key_hash, organization_id, scopes, revoked_at, requests_per_minute, tokens_per_minute,
                    concurrent_requests, limits_fail_mode ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version('keys');
CREATE TRIGGER organizations_routing_rows AFTER INSERT OR DELETE OR TRUNCATE ON organizations
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version('keys');
CREATE TRIGGER organizations_routing_columns
    AFTER UPDATE OF id, slug, is_platform, created_at, requests_per_minute, tokens_per_minute, concurrent_requests
    ON organizations
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version('keys');

-- catalog: what list-models-for-routing and list-offerings-for-routing read.
CREATE TRIGGER models_routing AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON models
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version('catalog');
CREATE TRIGGER offerings_routing AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON offerings
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version('catalog');
CREATE TRIGGER offering_grants_routing AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON offering_grants
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version('catalog');
CREATE TRIGGER organizations_catalog_rows AFTER INSERT OR DELETE OR TRUNCATE ON organizations
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version('catalog');
CREATE TRIGGER organizations_catalog_columns AFTER UPDATE OF id, slug ON organizations
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version('catalog');
