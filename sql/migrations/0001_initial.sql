-- The whole domain: catalog, access, fleet, logs and usage.
-- Statuses are text with CHECK constraints (readable in psql, cheap to extend in a later migration).

CREATE SCHEMA IF NOT EXISTS finops;

-- Catalog ---------------------------------------------------------------------------------------

CREATE TABLE providers (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code        text NOT NULL UNIQUE CHECK (code ~ '^[a-z0-9][a-z0-9_-]*$'),
    name        text NOT NULL,
    is_active   boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE provider_settings (
    provider_id                    uuid PRIMARY KEY REFERENCES providers (id) ON DELETE CASCADE,
    worker_data_volume_gb_default  integer CHECK (worker_data_volume_gb_default >= 0),
    -- Marketplace labels tried in order when a type needs a diskless (sbs) boot image.
    boot_image_labels              text[] NOT NULL DEFAULT '{}',
    settings                       jsonb NOT NULL DEFAULT '{}',
    updated_at                     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE zones (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id  uuid NOT NULL REFERENCES providers (id),
    code         text NOT NULL,
    name         text NOT NULL,
    is_active    boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, code),
    UNIQUE (id, provider_id)
);

CREATE TABLE instance_types (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id        uuid NOT NULL REFERENCES providers (id),
    code               text NOT NULL,
    name               text NOT NULL,
    gpu_count          integer NOT NULL DEFAULT 0 CHECK (gpu_count >= 0),
    gpu_model          text,
    vram_gb_per_gpu    integer NOT NULL DEFAULT 0 CHECK (vram_gb_per_gpu >= 0),
    cpu_count          integer NOT NULL DEFAULT 0 CHECK (cpu_count >= 0),
    ram_gb             integer NOT NULL DEFAULT 0 CHECK (ram_gb >= 0),
    cost_per_hour      numeric(12, 4) NOT NULL DEFAULT 0 CHECK (cost_per_hour >= 0),
    -- The port the worker (vLLM by default) listens on inside the instance.
    worker_port        integer NOT NULL DEFAULT 8000 CHECK (worker_port BETWEEN 1 AND 65535),
    -- Per-provider knobs, e.g. {"scaleway": {"boot_image_id": "..."}}.
    allocation_params  jsonb NOT NULL DEFAULT '{}',
    is_active          boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, code),
    UNIQUE (id, provider_id)
);

-- Which types are offered in which zone.
CREATE TABLE instance_type_zones (
    instance_type_id  uuid NOT NULL REFERENCES instance_types (id) ON DELETE CASCADE,
    zone_id           uuid NOT NULL REFERENCES zones (id) ON DELETE CASCADE,
    is_available      boolean NOT NULL DEFAULT true,
    PRIMARY KEY (instance_type_id, zone_id)
);
CREATE INDEX instance_type_zones_zone_idx ON instance_type_zones (zone_id);

CREATE TABLE models (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name             text NOT NULL,
    hf_repo_id       text NOT NULL UNIQUE CHECK (hf_repo_id <> ''),
    is_active        boolean NOT NULL DEFAULT true,
    parameter_count  bigint CHECK (parameter_count > 0),
    context_length   integer CHECK (context_length > 0),
    -- NULL: size the data volume from provider settings or the parameter count; 0: no data volume.
    data_volume_gb   integer CHECK (data_volume_gb >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Access ----------------------------------------------------------------------------------------

CREATE TABLE organizations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]*$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- An organization publishes a model under `org_slug/model_code`.
CREATE TABLE offerings (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    model_id         uuid NOT NULL REFERENCES models (id),
    model_code       text NOT NULL CHECK (model_code ~ '^[A-Za-z0-9][A-Za-z0-9._-]*$'),
    visibility       text NOT NULL DEFAULT 'private' CHECK (visibility IN ('public', 'private')),
    is_active        boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, model_code)
);
CREATE INDEX offerings_model_idx ON offerings (model_id);

-- Other organizations allowed to use a private offering.
CREATE TABLE offering_grants (
    offering_id      uuid NOT NULL REFERENCES offerings (id) ON DELETE CASCADE,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (offering_id, organization_id)
);

CREATE TABLE api_keys (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    name             text NOT NULL,
    -- The first characters of the key, to recognise it in lists; the key itself is never stored.
    key_prefix       text NOT NULL,
    -- SHA-256 of the whole key, hex.
    key_hash         text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    scopes           text[] NOT NULL DEFAULT '{inference}'
                     CHECK (scopes <@ ARRAY['inference', 'admin']::text[] AND cardinality(scopes) > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_used_at     timestamptz,
    revoked_at       timestamptz
);
CREATE INDEX api_keys_org_idx ON api_keys (organization_id);

-- Fleet -----------------------------------------------------------------------------------------

CREATE TABLE instances (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id                 uuid NOT NULL REFERENCES providers (id),
    zone_id                     uuid NOT NULL,
    instance_type_id            uuid NOT NULL,
    model_id                    uuid REFERENCES models (id),
    organization_id             uuid REFERENCES organizations (id),
    status                      text NOT NULL DEFAULT 'provisioning'
                                CHECK (status IN ('provisioning', 'booting', 'ready', 'terminating',
                                                  'terminated', 'failed')),
    provider_instance_id        text,
    provider_instance_name      text,
    ip_address                  text,
    worker_port                 integer CHECK (worker_port BETWEEN 1 AND 65535),
    worker_status               text NOT NULL DEFAULT 'unknown'
                                CHECK (worker_status IN ('unknown', 'starting', 'ready', 'unhealthy', 'stale')),
    worker_model_id             text,
    worker_queue_depth          integer NOT NULL DEFAULT 0 CHECK (worker_queue_depth >= 0),
    worker_last_heartbeat_at    timestamptz,
    worker_consecutive_failures integer NOT NULL DEFAULT 0 CHECK (worker_consecutive_failures >= 0),
    -- SHA-256 (hex) of the token the worker agent presents on heartbeats.
    worker_token_hash           text,
    -- What the deployment asked for; NULL = let the scheduler decide.
    data_volume_gb              integer CHECK (data_volume_gb >= 0),
    data_volume_delete_on_terminate boolean NOT NULL DEFAULT true,
    idempotency_key             text UNIQUE,
    error_code                  text,
    error_message               text,
    attempts                    integer NOT NULL DEFAULT 0,
    next_attempt_at             timestamptz NOT NULL DEFAULT now(),
    provisioning_deadline_at    timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    ready_at                    timestamptz,
    terminating_at              timestamptz,
    terminated_at               timestamptz,
    deleted_at                  timestamptz,
    FOREIGN KEY (zone_id, provider_id) REFERENCES zones (id, provider_id),
    FOREIGN KEY (instance_type_id, provider_id) REFERENCES instance_types (id, provider_id)
);
-- The gateway's ready-worker view and the scheduler's work queue both read live rows by status.
CREATE INDEX instances_live_idx ON instances (status, model_id) WHERE status NOT IN ('terminated', 'failed');
CREATE INDEX instances_created_idx ON instances (created_at DESC, id DESC);
CREATE UNIQUE INDEX instances_provider_instance_idx ON instances (provider_id, provider_instance_id)
    WHERE provider_instance_id IS NOT NULL;

CREATE TABLE instance_volumes (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    instance_id          uuid NOT NULL REFERENCES instances (id),
    provider_volume_id   text NOT NULL,
    name                 text,
    volume_type          text NOT NULL,
    size_bytes           bigint CHECK (size_bytes >= 0),
    -- The slot on the server ("0" is the root volume).
    slot                 text,
    is_boot              boolean NOT NULL DEFAULT false,
    delete_on_terminate  boolean NOT NULL DEFAULT true,
    created_at           timestamptz NOT NULL DEFAULT now(),
    attached_at          timestamptz,
    detached_at          timestamptz,
    deleted_at           timestamptz,
    UNIQUE (instance_id, provider_volume_id)
);
CREATE INDEX instance_volumes_live_idx ON instance_volumes (instance_id) WHERE deleted_at IS NULL;

CREATE TABLE action_logs (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    instance_id    uuid REFERENCES instances (id),
    action_type    text NOT NULL,
    component      text NOT NULL DEFAULT 'scheduler' CHECK (component IN ('api', 'scheduler', 'gateway')),
    status         text NOT NULL CHECK (status IN ('in_progress', 'success', 'failed')),
    error_code     text,
    error_message  text,
    metadata       jsonb NOT NULL DEFAULT '{}',
    duration_ms    integer CHECK (duration_ms >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    completed_at   timestamptz
);
CREATE INDEX action_logs_instance_idx ON action_logs (instance_id, created_at DESC);
CREATE INDEX action_logs_created_idx ON action_logs (created_at DESC, id DESC);

-- Usage -----------------------------------------------------------------------------------------

CREATE TABLE instance_request_metrics (
    instance_id             uuid PRIMARY KEY REFERENCES instances (id),
    total_requests          bigint NOT NULL DEFAULT 0,
    successful_requests     bigint NOT NULL DEFAULT 0,
    failed_requests         bigint NOT NULL DEFAULT 0,
    cancelled_requests      bigint NOT NULL DEFAULT 0,
    prompt_tokens           bigint NOT NULL DEFAULT 0,
    completion_tokens       bigint NOT NULL DEFAULT 0,
    total_latency_ms        bigint NOT NULL DEFAULT 0,
    first_request_at        timestamptz,
    last_request_at         timestamptz,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE finops.inference_usage (
    request_id         text PRIMARY KEY,
    created_at         timestamptz NOT NULL,
    api_key_id         uuid,
    organization_id    uuid,
    instance_id        uuid,
    model_id           uuid,
    model              text NOT NULL,
    route              text NOT NULL,
    stream             boolean NOT NULL,
    status             text NOT NULL
                       CHECK (status IN ('success', 'client_cancelled', 'upstream_error', 'error')),
    http_status        integer,
    prompt_tokens      integer NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens  integer NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    total_tokens       integer NOT NULL DEFAULT 0 CHECK (total_tokens >= 0),
    -- True when the tokens were estimated (a stream cut before the upstream reported usage).
    usage_estimated    boolean NOT NULL DEFAULT false,
    latency_ms         integer,
    ttft_ms            integer,
    recorded_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inference_usage_org_idx ON finops.inference_usage (organization_id, created_at);
CREATE INDEX inference_usage_model_idx ON finops.inference_usage (model_id, created_at);
CREATE INDEX inference_usage_instance_idx ON finops.inference_usage (instance_id, created_at);
