"""The scheduler's settings refuse values it cannot run with, naming the variable."""

from __future__ import annotations

import pytest

from inventiv.settings import Settings, SettingsError


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INVENTIV_SCHEDULER_TICK_S": "0"}, "INVENTIV_SCHEDULER_TICK_S must be positive"),
        ({"INVENTIV_HEALTH_TIMEOUT_S": "-1"}, "INVENTIV_HEALTH_TIMEOUT_S must be positive"),
        ({"INVENTIV_SCHEDULER_LEASE_S": "0"}, "INVENTIV_SCHEDULER_LEASE_S must be positive"),
        ({"INVENTIV_WORKER_HEALTH_FAILURES": "0"}, "INVENTIV_WORKER_HEALTH_FAILURES must be at least 1"),
        ({"WORKER_DATA_VOLUME_GB": "-5"}, "WORKER_DATA_VOLUME_GB must be 0"),
    ],
)
def test_bad_scheduler_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_scheduler_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {"INVENTIV_WORKER_HEALTH_FAILURES": "5", "INVENTIV_SCHEDULER_RETRY_MAX_S": "30", "WORKER_DATA_VOLUME_GB": "0"}
    )
    assert (settings.worker_health_failures, settings.scheduler_retry_max_s, settings.worker_data_volume_gb) == (
        5,
        30.0,
        0,
    )
