-- Dead workers and their replacements (scheduler/replacement.py). A deployment may ask that an instance
-- whose worker died be replaced: the scheduler then terminates it and asks for a new instance like it,
-- linked to it by replaces_instance_id (unique: one replacement per dead instance, whichever scheduler and
-- however many retries). lineage_id is the first instance of a chain of replacements (NULL on that first
-- one), so a crash-looping deployment's replacements can be counted and bounded.
ALTER TABLE instances
    ADD COLUMN replace_on_failure boolean NOT NULL DEFAULT false,
    ADD COLUMN replaces_instance_id uuid REFERENCES instances (id),
    ADD COLUMN lineage_id uuid REFERENCES instances (id);
CREATE UNIQUE INDEX instances_replaces_idx ON instances (replaces_instance_id) WHERE replaces_instance_id IS NOT NULL;
CREATE INDEX instances_lineage_idx ON instances (lineage_id, created_at) WHERE lineage_id IS NOT NULL;
