-- Limits per key and per organization, and spending quotas per organization. NULL everywhere means
-- unlimited, so every existing key and organization keeps working exactly as before.

-- Rate limits, enforced by the gateway in Redis per calendar minute (gateway/limits.py). A key's request
-- must pass both its own limits and its organization's.
--   requests_per_minute: inference requests started in the current minute.
--   tokens_per_minute:   total tokens (prompt + completion, as the worker reported them) charged in the
--                        current minute; a request is admitted while the count is below the limit.
--   concurrent_requests: inference requests in flight at once, streamed or not.
ALTER TABLE organizations
    ADD COLUMN requests_per_minute  integer CHECK (requests_per_minute > 0),
    ADD COLUMN tokens_per_minute    integer CHECK (tokens_per_minute > 0),
    ADD COLUMN concurrent_requests  integer CHECK (concurrent_requests > 0),
    -- Deployment quotas, checked before an instance row is written (gateway/control/quotas.py).
    -- Live instances: every status but terminated and failed.
    ADD COLUMN max_instances        integer CHECK (max_instances >= 0),
    -- Sum of instance_types.gpu_count over the live instances.
    ADD COLUMN max_gpus             integer CHECK (max_gpus >= 0),
    -- In the currency of instance_types.cost_per_hour, against the spend of the current calendar month
    -- (UTC): each instance's cost_per_hour times the hours of its life within the month.
    ADD COLUMN monthly_budget       numeric(12, 2) CHECK (monthly_budget >= 0),
    -- Admin keys of a platform organization manage every organization; the oldest organization (the one
    -- created first, by the seed) is one whatever this flag says.
    ADD COLUMN is_platform          boolean NOT NULL DEFAULT false,
    ADD COLUMN updated_at           timestamptz NOT NULL DEFAULT now();

ALTER TABLE api_keys
    ADD COLUMN requests_per_minute  integer CHECK (requests_per_minute > 0),
    ADD COLUMN tokens_per_minute    integer CHECK (tokens_per_minute > 0),
    ADD COLUMN concurrent_requests  integer CHECK (concurrent_requests > 0),
    -- When Redis cannot be asked: 'open' serves the request unlimited, 'closed' refuses it (503).
    ADD COLUMN limits_fail_mode     text NOT NULL DEFAULT 'open' CHECK (limits_fail_mode IN ('open', 'closed'));
