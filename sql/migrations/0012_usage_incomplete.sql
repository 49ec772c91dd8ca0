-- A stream's usage record at its start, status 'incomplete', with the prompt's estimated tokens: the
-- stream's final record replaces it. What remains of a stream cut by a crash of its gateway process.
ALTER TABLE finops.inference_usage DROP CONSTRAINT inference_usage_status_check;
ALTER TABLE finops.inference_usage ADD CONSTRAINT inference_usage_status_check
    CHECK (status IN ('success', 'client_cancelled', 'upstream_error', 'error', 'incomplete'));
