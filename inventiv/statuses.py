"""The states an instance row holds: its lifecycle `status` and its worker's `worker_status`.

The scheduler writes them, the gateway and the control API read them, and the `instances` table's CHECK
constraints allow exactly these values (tests/inventiv/test_statuses.py holds the two together). As
`StrEnum`s they compare equal to the text Postgres returns.
"""

from __future__ import annotations

import enum


class InstanceStatus(enum.StrEnum):
    PROVISIONING = "provisioning"  # asked for; the scheduler creates the server and its volumes
    BOOTING = "booting"  # powered on; waiting for its address and its worker
    READY = "ready"  # the worker serves its model
    TERMINATING = "terminating"  # asked to go; the scheduler releases what it holds
    TERMINATED = "terminated"  # released
    FAILED = "failed"  # gave up; the scheduler still cleans up what it holds


class WorkerStatus(enum.StrEnum):
    UNKNOWN = "unknown"  # never heard from
    STARTING = "starting"  # answers, but does not serve its model yet
    READY = "ready"
    UNHEALTHY = "unhealthy"  # refuses or fails probes
    STALE = "stale"  # silent for too long

