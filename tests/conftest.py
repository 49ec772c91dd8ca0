"""Session-wide fixtures: a real Postgres database and a Redis key prefix per test session.

The services come from INVENTIV_TEST_DATABASE_URL / INVENTIV_TEST_REDIS_URL (CI exports them); without
them the embedded services are started under a temporary folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import settings

# Test helpers (fixtures, fake clouds, factories) live in tests/support/ and import as top-level modules.
# Only that folder goes on sys.path: the test folders mirror the packages (tests/gateway, tests/sql, ...)
# and would otherwise shadow them as namespace packages.
sys.path.insert(0, str(Path(__file__).parent / "support"))

pytest_plugins = ["fixtures.services", "fixtures.llama"]

# Property tests run the same examples on every run and machine (a failure in CI reproduces locally), a
# bounded number of them, and with no per-example deadline: the shared CI machines' speed varies.
settings.register_profile("inventiv", derandomize=True, database=None, deadline=None, max_examples=200)
settings.load_profile("inventiv")
