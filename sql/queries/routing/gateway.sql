-- name: routing-versions()
-- The version of each routing table group (keys, catalog), bumped by triggers on the tables they are
-- read from (migration 0014): a gateway process refetches a group only when its version moved.
SELECT name, version FROM routing_versions;
