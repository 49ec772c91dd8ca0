from __future__ import annotations

import pytest

from providers.base import (
    AuthError,
    InvalidRequest,
    NotFound,
    OutOfStock,
    ProviderTimeout,
    QuotaExceeded,
    TransientError,
)
from scheduler.retry import Disposition, StepFailed, backoff_s, classify, error_fields, retry_logged


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TransientError("503"), Disposition.RETRY),
        (ProviderTimeout("slow"), Disposition.RETRY),
        (QuotaExceeded("quota"), Disposition.FAIL),
        (OutOfStock("none left"), Disposition.FAIL),
        (InvalidRequest("bad"), Disposition.FAIL),
        (AuthError("denied"), Disposition.FAIL),
        (NotFound("gone"), Disposition.FAIL),
        (StepFailed("X", "no"), Disposition.FAIL),
        (ConnectionResetError("db"), Disposition.RETRY),
        (RuntimeError("bug"), Disposition.RETRY),
    ],
)
def test_classify(error: Exception, expected: Disposition) -> None:
    assert classify(error) is expected


@pytest.mark.parametrize(
    ("error", "fields"),
    [
        (OutOfStock("no L40S"), ("PROVIDER_OUT_OF_STOCK", "no L40S")),
        (InvalidRequest("bad", code="SCW_INVALID_ARGUMENTS"), ("SCW_INVALID_ARGUMENTS", "bad")),
        (StepFailed("MODEL_INACTIVE", "model x is not active"), ("MODEL_INACTIVE", "model x is not active")),
        (KeyError("k"), ("INTERNAL_ERROR", "KeyError: 'k'")),
    ],
)
def test_error_fields(error: Exception, fields: tuple[str, str]) -> None:
    assert error_fields(error) == fields


@pytest.mark.parametrize(
    ("attempts", "jitter", "expected"),
    [
        (1, 1.0, 2.0),
        (1, 0.0, 1.0),
        (2, 1.0, 4.0),
        (3, 1.0, 8.0),
        (6, 1.0, 60.0),  # capped
        (1000, 1.0, 60.0),  # no overflow
        (1000, 0.0, 30.0),
    ],
)
def test_backoff(attempts: int, jitter: float, expected: float) -> None:
    assert backoff_s(attempts, base_s=2.0, cap_s=60.0, jitter=jitter) == pytest.approx(expected)


def test_backoff_counts_from_one() -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        backoff_s(0, base_s=2.0, cap_s=60.0, jitter=0.5)


def test_retry_logged_logs_the_first_retries_then_each_power_of_two() -> None:
    assert [n for n in range(1, 300) if retry_logged(n)] == [1, 2, 3, 4, 8, 16, 32, 64, 128, 256]
