"""What a failed step means for its instance: retry later, or give up, and how long to wait.

Provider errors say it by their class (`providers.base`): transient ones are retried with capped,
jittered exponential backoff; quota, stock, invalid requests and auth failures will not fix themselves,
so provisioning fails at once. Anything unexpected (a bug, a dropped connection to Postgres) is retried:
the provisioning deadline bounds it, and cleanup must never stop trying.
"""

from __future__ import annotations

import enum

from providers.base import ProviderError


class StepFailed(Exception):
    """A step that cannot succeed for this instance; `code` goes into error_code and action_logs."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Disposition(enum.Enum):
    RETRY = "retry"
    FAIL = "fail"


def classify(exc: BaseException) -> Disposition:
    if isinstance(exc, StepFailed):
        return Disposition.FAIL
    if isinstance(exc, ProviderError):
        return Disposition.RETRY if exc.retryable else Disposition.FAIL
    return Disposition.RETRY


def error_fields(exc: BaseException) -> tuple[str, str]:
    """(error_code, error_message) for the instance row and its action log."""
    if isinstance(exc, StepFailed | ProviderError):
        return exc.code, exc.message
    return "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"


def backoff_s(attempts: int, base_s: float, cap_s: float, jitter: float) -> float:
    """Delay before retry number `attempts` (1-based): base doubled per attempt, capped.

    `jitter` in [0, 1) spreads retries of many instances hit by one outage over the upper half of the
    delay, so they do not all come back at once.
    """
    if attempts < 1:
        raise ValueError("attempts starts at 1")
    delay = min(cap_s, base_s * 2 ** min(attempts - 1, 32))
    return delay * (0.5 + 0.5 * jitter)


# Every retry of a release is logged up to this one; after it only the 2^n-th, so an outage of days leaves a
# few dozen rows per instance, not one per minute (the backoff's cap), and the first ones show at once.
_LOGGED_RETRIES = 4


def retry_logged(attempt: int) -> bool:
    """Whether retry number `attempt` (1-based) of a release gets its own action log row."""
    return attempt <= _LOGGED_RETRIES or attempt & (attempt - 1) == 0
