-- The scheduler's work queue: instances with something left to do, by when they are next due. The
-- predicate is the one the claim query filters on, so the planner can use this small index.
CREATE INDEX instances_due_idx ON instances (next_attempt_at)
    WHERE status IN ('provisioning', 'booting', 'terminating') OR (status = 'failed' AND deleted_at IS NULL);
