"""benchmarks/limits_cost.py runs end to end on a few requests, and its rounds are what they claim to be.

The figures themselves are for a quiet machine (see the module); this only catches a script that no
longer runs, or whose "on" round would measure a key that is not limited.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from inventiv.settings import Settings
from sql.databases import with_database

ROOT = Path(__file__).resolve().parents[2]


def test_the_script_measures_both_variants(settings: Settings, database_url: str) -> None:
    server = with_database(database_url, "postgres")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "INVENTIV_DATABASE_URL": server,
           "INVENTIV_REDIS_URL": settings.redis_url or ""}
    result = subprocess.run([sys.executable, "-m", "benchmarks.limits_cost", "--requests", "20", "--rounds", "1"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[1:]] == ["limits off", "limits on", "cost"]
