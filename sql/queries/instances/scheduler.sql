-- The scheduler's reads and writes of instances. The claim is the single gate to an instance's work: it
-- takes a free (or run out) claim under FOR UPDATE SKIP LOCKED and names the pass that holds it with a
-- fresh claim_token, which renews and releases it; so two passes (of this process or another scheduler)
-- never work on one instance at once. Every status transition names the status it leaves, so an
-- operator's DELETE during provisioning is never undone.

-- name: claim-due-instances(lease_s, limit)
-- Work left: provisioning, booting, terminating, and failed instances not yet cleaned up. next_attempt_at
-- moves with the claim, so a claimed row is not due again until its claim runs out.
UPDATE instances
SET claim_token = gen_random_uuid(),
    claim_expires_at = now() + make_interval(secs => :lease_s::float8),
    next_attempt_at = now() + make_interval(secs => :lease_s::float8)
WHERE id IN (
    SELECT id FROM instances
    WHERE (status IN ('provisioning', 'booting', 'terminating') OR (status = 'failed' AND deleted_at IS NULL))
      AND next_attempt_at <= now()
      AND (claim_expires_at IS NULL OR claim_expires_at <= now())
    ORDER BY next_attempt_at
    LIMIT :limit::integer
    FOR UPDATE SKIP LOCKED)
RETURNING id, claim_token;

-- name: claim-instance-now(instance_id, lease_s)^
-- A command woke this instance: claim it whatever its next_attempt_at (a backoff), but never while
-- another pass holds an unexpired claim on it.
UPDATE instances
SET claim_token = gen_random_uuid(),
    claim_expires_at = now() + make_interval(secs => :lease_s::float8),
    next_attempt_at = now() + make_interval(secs => :lease_s::float8)
WHERE id IN (
    SELECT id FROM instances
    WHERE id = :instance_id
      AND (status IN ('provisioning', 'booting', 'terminating') OR (status = 'failed' AND deleted_at IS NULL))
      AND (claim_expires_at IS NULL OR claim_expires_at <= now())
    FOR UPDATE SKIP LOCKED)
RETURNING id, claim_token;

-- name: renew-instance-claim(instance_id, claim_token, lease_s)^
-- No row: the claim is no longer this pass's (it ran out and another pass took it, or the row is gone).
UPDATE instances
SET claim_expires_at = now() + make_interval(secs => :lease_s::float8),
    next_attempt_at = greatest(next_attempt_at, now() + make_interval(secs => :lease_s::float8))
WHERE id = :instance_id AND claim_token = :claim_token::uuid
RETURNING id;

-- name: get-instance-for-scheduler(instance_id, default_deadline_s)^
-- Everything a step decides on: the row, its catalog entries, its tracked volumes (a JSON array, boot
-- first: one statement, read again after every step), and whether the deadline has passed (by the
-- database's clock, the one every scheduler shares).
SELECT i.id, i.status, p.code AS provider_code, p.is_active AS provider_active,
       z.code AS zone_code, z.is_active AS zone_active,
       i.instance_type_id, t.code AS instance_type_code, t.is_active AS type_active,
       t.allocation_params, t.worker_port AS type_worker_port,
       coalesce(itz.is_available, false) AS type_offered_in_zone,
       i.model_id, m.hf_repo_id AS model_hf_repo_id, m.is_active AS model_active, i.engine,
       m.data_volume_gb AS model_data_volume_gb, m.parameter_count AS model_parameter_count,
       ps.worker_data_volume_gb_default AS provider_data_volume_gb_default,
       coalesce(ps.boot_image_labels, '{}') AS boot_image_labels,
       i.provider_instance_id, i.ip_address, i.worker_port, i.data_volume_gb, i.data_volume_delete_on_terminate,
       i.attempts, i.deleted_at,
       extract(epoch FROM now() - i.wait_started_at)::float8 AS waited_s,
       now() >= coalesce(i.provisioning_deadline_at,
                         i.created_at + make_interval(secs => :default_deadline_s::float8)) AS deadline_passed,
       coalesce((SELECT json_agg(json_build_object(
                            'provider_volume_id', v.provider_volume_id, 'is_boot', v.is_boot,
                            'delete_on_terminate', v.delete_on_terminate, 'name', v.name,
                            'attached_at', v.attached_at, 'detached_at', v.detached_at, 'deleted_at', v.deleted_at)
                        ORDER BY v.is_boot DESC, v.created_at, v.id)
                 FROM instance_volumes v WHERE v.instance_id = i.id), '[]'::json) AS volumes
FROM instances i
JOIN providers p ON p.id = i.provider_id
JOIN zones z ON z.id = i.zone_id
JOIN instance_types t ON t.id = i.instance_type_id
LEFT JOIN instance_type_zones itz ON itz.instance_type_id = i.instance_type_id AND itz.zone_id = i.zone_id
LEFT JOIN models m ON m.id = i.model_id
LEFT JOIN provider_settings ps ON ps.provider_id = i.provider_id
WHERE i.id = :instance_id;

-- name: set-instance-data-volume-gb(instance_id, data_volume_gb)!
UPDATE instances SET data_volume_gb = :data_volume_gb::integer, updated_at = now() WHERE id = :instance_id;

-- name: mark-instance-create-requested(instance_id)!
-- Written just before a server is asked for: from then on the orphan sweep looks in the instance's zone.
UPDATE instances SET create_requested_at = coalesce(create_requested_at, now()), updated_at = now()
WHERE id = :instance_id;

-- name: record-instance-server(instance_id, provider_instance_id, provider_instance_name)!
-- Written whatever the status: a server created while the operator asked to terminate must be known.
UPDATE instances
SET provider_instance_id = :provider_instance_id, provider_instance_name = :provider_instance_name,
    updated_at = now()
WHERE id = :instance_id;

-- name: mark-instance-booting(instance_id)!
UPDATE instances SET status = 'booting', worker_status = 'starting', updated_at = now()
WHERE id = :instance_id AND status = 'provisioning';

-- name: record-instance-address(instance_id, ip_address, worker_port)!
UPDATE instances SET ip_address = :ip_address, worker_port = :worker_port::integer, updated_at = now()
WHERE id = :instance_id AND status = 'booting';

-- name: mark-instance-ready(instance_id, worker_model_id, worker_queue_depth)!
UPDATE instances
SET status = 'ready', ready_at = now(), worker_status = 'ready', worker_model_id = :worker_model_id,
    worker_queue_depth = :worker_queue_depth::integer, worker_last_heartbeat_at = now(),
    worker_consecutive_failures = 0, attempts = 0, error_code = NULL, error_message = NULL, updated_at = now()
WHERE id = :instance_id AND status = 'booting';

-- name: mark-instance-failed(instance_id, error_code, error_message)!
-- Failed instances are then cleaned up by the release steps (deleted_at stays NULL until they are done).
UPDATE instances
SET status = 'failed', error_code = :error_code, error_message = :error_message, next_attempt_at = now(),
    updated_at = now()
WHERE id = :instance_id AND status IN ('provisioning', 'booting', 'ready');

-- name: record-instance-retry(instance_id, error_code, error_message)!
-- While provisioning or terminating, the last error stays visible until a pass succeeds (a release that
-- cannot reach its cloud shows why); a failed instance keeps the error it failed with, whatever its
-- cleanup runs into.
UPDATE instances
SET attempts = attempts + 1,
    error_code = CASE WHEN status IN ('provisioning', 'booting', 'terminating') THEN :error_code ELSE error_code END,
    error_message = CASE WHEN status IN ('provisioning', 'booting', 'terminating') THEN :error_message
                         ELSE error_message END,
    updated_at = now()
WHERE id = :instance_id;

-- name: release-instance-claim(instance_id, claim_token, status, delay_s, progressed, waiting, stepped)!
-- Hands the claim back, due again after delay_s; at once if the status changed under the pass (a DELETE
-- during provisioning). A pass that ran without error clears the retry count and, while provisioning, the
-- error an earlier pass left; a release clears it only when an earlier pass failed (attempts > 0), so the
-- reason it was terminated for (WORKER_DEAD) stays. A pass that ends waiting keeps the time the wait
-- began, or starts it anew when it took a step first (a new thing to wait for). Only the claim's holder
-- releases it.
UPDATE instances
SET claim_token = NULL,
    claim_expires_at = NULL,
    next_attempt_at = CASE WHEN status = :status THEN now() + make_interval(secs => :delay_s::float8)
                           ELSE now() END,
    attempts = CASE WHEN :progressed::boolean THEN 0 ELSE attempts END,
    error_code = CASE WHEN :progressed::boolean AND (status IN ('provisioning', 'booting')
                           OR (status IN ('terminating', 'terminated') AND attempts > 0)) THEN NULL
                      ELSE error_code END,
    error_message = CASE WHEN :progressed::boolean AND (status IN ('provisioning', 'booting')
                              OR (status IN ('terminating', 'terminated') AND attempts > 0)) THEN NULL
                         ELSE error_message END,
    wait_started_at = CASE WHEN NOT :waiting::boolean OR status <> :status THEN NULL
                           WHEN :stepped::boolean THEN now()
                           ELSE coalesce(wait_started_at, now()) END
WHERE id = :instance_id AND claim_token = :claim_token::uuid;

-- name: finish-instance-release(instance_id)!
-- A terminating instance ends terminated even when an earlier cleanup (of a failed instance) had already
-- set deleted_at; a failed one keeps its status and is done once deleted_at is set.
UPDATE instances
SET deleted_at = coalesce(deleted_at, now()),
    status = CASE WHEN status = 'terminating' THEN 'terminated' ELSE status END,
    terminated_at = CASE WHEN status = 'terminating' THEN now() ELSE terminated_at END,
    updated_at = now()
WHERE id = :instance_id AND (status = 'terminating' OR (status = 'failed' AND deleted_at IS NULL));

-- name: list-instances-to-probe(agent_fresh_s)
-- Ready workers, polled by the health job (booting ones are polled by their provisioning pass), except
-- those whose agent pushed a heartbeat recently: they report themselves until their agent goes quiet.
SELECT i.id, i.ip_address, i.worker_port, m.hf_repo_id AS model_hf_repo_id, i.engine, i.worker_status,
       i.worker_consecutive_failures,
       extract(epoch FROM now() - i.worker_last_heartbeat_at)::float8 AS heartbeat_age_s
FROM instances i
LEFT JOIN models m ON m.id = i.model_id
WHERE i.status = 'ready' AND i.ip_address IS NOT NULL AND i.worker_port IS NOT NULL
  AND (i.agent_heartbeat_at IS NULL OR i.agent_heartbeat_at < now() - make_interval(secs => :agent_fresh_s::float8));

-- name: record-worker-probe(instance_id, worker_status, worker_model_id, worker_queue_depth, answered, consecutive_failures)!
-- A probe that got no answer leaves the model, queue depth and heartbeat as they were.
UPDATE instances
SET worker_status = :worker_status,
    worker_model_id = CASE WHEN :answered::boolean THEN :worker_model_id ELSE worker_model_id END,
    worker_queue_depth = coalesce(:worker_queue_depth::integer, worker_queue_depth),
    worker_last_heartbeat_at = CASE WHEN :answered::boolean THEN now() ELSE worker_last_heartbeat_at END,
    worker_consecutive_failures = :consecutive_failures::integer,
    updated_at = now()
WHERE id = :instance_id AND status = 'ready';

-- name: list-instances-to-reconcile()
-- Every live instance with a server: provisioning once its volumes were discovered (the boot volume is
-- tracked; before that the provisioning pass tracks them, tagging the boot volume first), booting, ready,
-- and failed before its cleanup finished. One a pass holds (an unexpired claim) is left out: its volumes
-- are changing under that pass, and the next reconciliation finds them settled.
SELECT i.id, i.status, p.code AS provider_code, z.code AS zone_code, i.provider_instance_id,
       i.data_volume_delete_on_terminate
FROM instances i
JOIN providers p ON p.id = i.provider_id
JOIN zones z ON z.id = i.zone_id
WHERE i.provider_instance_id IS NOT NULL
  AND (i.status IN ('booting', 'ready')
       OR (i.status = 'failed' AND i.deleted_at IS NULL)
       OR (i.status = 'provisioning'
           AND EXISTS (SELECT 1 FROM instance_volumes v WHERE v.instance_id = i.id AND v.is_boot)))
  AND (i.claim_expires_at IS NULL OR i.claim_expires_at <= now());

-- name: list-sweep-zones()
-- Where this deployment may hold resources: every zone where a server was ever asked for
-- (create_requested_at is written just before the create call), active or not. It creates nothing
-- anywhere else, and a provider never reached (no credentials) is never asked.
SELECT DISTINCT p.code AS provider_code, z.code AS zone_code
FROM zones z JOIN providers p ON p.id = z.provider_id
WHERE EXISTS (SELECT 1 FROM instances i WHERE i.zone_id = z.id AND i.create_requested_at IS NOT NULL)
ORDER BY 1, 2;

-- name: list-live-instance-resources()
-- What the sweep must leave alone: live instance rows (cleanup not finished), their servers, and the
-- zones they are in (whose worker firewall they need).
SELECT i.id, i.provider_instance_id, p.code AS provider_code, z.code AS zone_code
FROM instances i JOIN providers p ON p.id = i.provider_id JOIN zones z ON z.id = i.zone_id
WHERE i.deleted_at IS NULL;

-- name: list-existing-instance-ids(instance_ids)
-- Which of these ids have a row at all (action_logs may only reference existing instances).
SELECT id FROM instances WHERE id = ANY(:instance_ids::uuid[]);

-- name: list-silent-workers()
-- Ready instances whose worker does not answer (stale or unhealthy), with how long it has been silent:
-- since its last answer (a probe's or its agent's heartbeat), or since it became ready if it never gave one.
SELECT i.id, i.worker_status, i.replace_on_failure,
       extract(epoch FROM now() - coalesce(i.worker_last_heartbeat_at, i.ready_at, i.updated_at))::float8 AS silent_s
FROM instances i
WHERE i.status = 'ready' AND i.worker_status IN ('stale', 'unhealthy');

-- name: mark-instance-worker-dead(instance_id, error_code, error_message)^
-- Only while still ready and silent: a worker that answered since, or an operator's DELETE, wins. The
-- release then runs as for a DELETE (kept data volumes are kept).
UPDATE instances
SET status = 'terminating', terminating_at = coalesce(terminating_at, now()), error_code = :error_code,
    error_message = :error_message, next_attempt_at = now(), updated_at = now()
WHERE id = :instance_id AND status = 'ready' AND worker_status IN ('stale', 'unhealthy')
RETURNING id, replace_on_failure, coalesce(lineage_id, id) AS lineage_id;

-- name: count-lineage-replacements(lineage_id, window_s)$
-- Replacements made in this chain of instances within the window (the first instance is not one).
SELECT count(*) FROM instances
WHERE lineage_id = :lineage_id::uuid AND created_at > now() - make_interval(secs => :window_s::float8);

-- name: insert-replacement-instance(instance_id, deadline_s)^
-- A new instance asking for what the dead one asked for, linked to it; at most one per dead instance
-- (the unique index on replaces_instance_id), however often this runs.
INSERT INTO instances (provider_id, zone_id, instance_type_id, model_id, organization_id, status, worker_port,
                       data_volume_gb, data_volume_delete_on_terminate, provisioning_deadline_at, engine,
                       replace_on_failure, replaces_instance_id, lineage_id)
SELECT provider_id, zone_id, instance_type_id, model_id, organization_id, 'provisioning', worker_port,
       data_volume_gb, data_volume_delete_on_terminate, now() + make_interval(secs => :deadline_s::float8), engine,
       replace_on_failure, id, coalesce(lineage_id, id)
FROM instances WHERE id = :instance_id
ON CONFLICT (replaces_instance_id) WHERE replaces_instance_id IS NOT NULL DO NOTHING
RETURNING id;
