-- What the worker agent (worker/agent.py) last pushed: when, and the machine's figures it reported (GPU
-- utilisation and memory, data volume usage). While its heartbeats are fresh the scheduler does not poll
-- the worker; once they stop, it polls again.
ALTER TABLE instances
    ADD COLUMN agent_heartbeat_at timestamptz,
    ADD COLUMN worker_telemetry jsonb;
