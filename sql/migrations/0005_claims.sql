-- A claim is the one gate to an instance's work: the pass that holds it is named by claim_token and
-- keeps it until claim_expires_at, which it renews while it runs. Another claim (the interval driver,
-- a command, another scheduler) can only take an instance whose claim is free or has run out, so one
-- instance never has two passes at once.
ALTER TABLE instances
    ADD COLUMN claim_token uuid,
    ADD COLUMN claim_expires_at timestamptz,
    -- When the instance started waiting on the cloud or its worker (booting, a server stopping, a volume
    -- detaching); NULL while passes make progress. Waits are polled less often the longer they last.
    ADD COLUMN wait_started_at timestamptz;
