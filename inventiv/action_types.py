"""The `action_type` of an `action_logs` row: what step was taken, by the control API or the scheduler.

The column is plain text (every new step would otherwise need a migration); this enum is the list, and
a test holds every action type the code writes to it.
"""

from __future__ import annotations

import enum


class ActionType(enum.StrEnum):
    # The control API and a replacement (component `api`, or `scheduler` for a replacement).
    REQUEST_CREATE = "REQUEST_CREATE"
    REQUEST_TERMINATE = "REQUEST_TERMINATE"
    # Provisioning (scheduler/provisioning.py).
    EXECUTE_CREATE = "EXECUTE_CREATE"
    PROVIDER_CREATE = "PROVIDER_CREATE"
    DISCOVER_VOLUMES = "DISCOVER_VOLUMES"
    PROVIDER_CREATE_VOLUME = "PROVIDER_CREATE_VOLUME"
    PROVIDER_ATTACH_VOLUME = "PROVIDER_ATTACH_VOLUME"
    PROVIDER_START = "PROVIDER_START"
    PROVIDER_ADDRESS = "PROVIDER_ADDRESS"
    HEALTH_CHECK = "HEALTH_CHECK"  # a span: one row across the passes that wait for the worker
    INSTANCE_FAILED = "INSTANCE_FAILED"
    # Release (scheduler/termination.py); the two EXECUTE_ rows are spans.
    EXECUTE_TERMINATE = "EXECUTE_TERMINATE"
    EXECUTE_CLEANUP = "EXECUTE_CLEANUP"
    PROVIDER_DETACH_VOLUME = "PROVIDER_DETACH_VOLUME"
    PROVIDER_TERMINATE = "PROVIDER_TERMINATE"
    PROVIDER_DELETE_VOLUME = "PROVIDER_DELETE_VOLUME"
    RELEASE_RETRY = "RELEASE_RETRY"
    # Dead workers (scheduler/replacement.py).
    WORKER_DEAD = "WORKER_DEAD"
    REPLACEMENT_REFUSED = "REPLACEMENT_REFUSED"
    # Reconciliation with the cloud (scheduler/reconcile.py).
    RECONCILE_VOLUME_DETACHED = "RECONCILE_VOLUME_DETACHED"
    RECONCILE_VOLUME_GONE = "RECONCILE_VOLUME_GONE"
    RECONCILE_TRACK_VOLUME = "RECONCILE_TRACK_VOLUME"
    # The orphan sweep (scheduler/sweep.py).
    ORPHAN_SERVER_DELETE = "ORPHAN_SERVER_DELETE"
    ORPHAN_VOLUME_DELETE = "ORPHAN_VOLUME_DELETE"
    ORPHAN_FIREWALL_DELETE = "ORPHAN_FIREWALL_DELETE"
