-- The request's correlation id: the client's X-Request-Id when it sent a sane one (the gateway's own id
-- otherwise), as the response, the worker and the access log show it. request_id stays the gateway's
-- own unique id, so a client reusing an X-Request-Id can never make a record collide with another.
ALTER TABLE finops.inference_usage ADD COLUMN correlation_id text;
CREATE INDEX inference_usage_correlation_idx ON finops.inference_usage (correlation_id);

-- The names the system this one replaces used, beside today's: its queries run unchanged.
ALTER TABLE finops.inference_usage
    ADD COLUMN input_tokens integer GENERATED ALWAYS AS (prompt_tokens) STORED,
    ADD COLUMN output_tokens integer GENERATED ALWAYS AS (completion_tokens) STORED;
ALTER TABLE instance_request_metrics
    ADD COLUMN input_tokens bigint GENERATED ALWAYS AS (prompt_tokens) STORED,
    ADD COLUMN output_tokens bigint GENERATED ALWAYS AS (completion_tokens) STORED,
    ADD COLUMN total_tokens bigint GENERATED ALWAYS AS (prompt_tokens + completion_tokens) STORED;
