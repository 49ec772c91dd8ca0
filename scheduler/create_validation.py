"""EXECUTE_CREATE's checks: is the instance still something the catalog lets us create?

The control API checked the request when it was made; the catalog may have changed since (a zone or a
type switched off, a model retired), and a command may have been queued long ago.
"""

from __future__ import annotations

from scheduler.retry import StepFailed
from scheduler.work import InstanceWork


def validation_error(work: InstanceWork) -> StepFailed | None:
    checks = (
        (work.provider_active, "PROVIDER_INACTIVE", f"provider {work.provider_code} is not active"),
        (work.zone_active, "ZONE_INACTIVE", f"zone {work.zone_code} is not active"),
        (work.type_active, "INSTANCE_TYPE_INACTIVE", f"instance type {work.instance_type_code} is not active"),
        (
            work.type_offered_in_zone,
            "INSTANCE_TYPE_NOT_IN_ZONE",
            f"instance type {work.instance_type_code} is not offered in zone {work.zone_code}",
        ),
        (
            work.model_id is None or bool(work.model_active),
            "MODEL_INACTIVE",
            f"model {work.model_hf_repo_id} is not active",
        ),
    )
    for ok, code, message in checks:
        if not ok:
            return StepFailed(code, message)
    return None
