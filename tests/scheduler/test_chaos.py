"""The real scheduler process, killed with SIGKILL at random moments while it creates and releases
instances on the fake Scaleway (20 % of calls failing, a fifth answered slowly): afterwards nothing is
left in the cloud, no instance ever got two servers or two data volumes, and every instance is final.
`python -m benchmarks.scheduler --chaos 50` runs the same with more lifecycles and reports the time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scheduler_chaos import run_chaos

from inventiv.settings import Settings

LIFECYCLES = 10


# Starts, kills and restarts of a real process on two shared cores: well past the default per-test limit.
@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_sigkilled_at_random_the_scheduler_converges_with_nothing_left_and_no_duplicate(
    db_pool: Any, settings: Settings, tmp_path: Path
) -> None:
    assert settings.database_url is not None and settings.redis_url is not None
    services = {
        "INVENTIV_DATABASE_URL": settings.database_url, "INVENTIV_REDIS_URL": settings.redis_url,
        "INVENTIV_REDIS_PREFIX": settings.redis_prefix,
    }  # fmt: skip

    figures = await run_chaos(db_pool, services, LIFECYCLES, tmp_path, seed=1, timeout_s=120)

    assert figures.kills >= 3 and figures.injected_errors > 0 and figures.slowed_calls > 0, figures
    assert figures.not_final == 0, figures
    assert figures.statuses == {"terminated": LIFECYCLES}, figures
    assert (figures.duplicate_servers, figures.duplicate_volumes) == (0, 0), figures
    assert figures.left == {"servers": 0, "volumes": 0, "local_volumes": 0, "security_groups": 0, "ips": 0}
