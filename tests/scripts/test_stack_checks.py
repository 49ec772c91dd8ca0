"""scripts/stack-checks, the CI runner: it starts, and it reads what `inventiv up` and locust print.

The real run is CI's `make stack-checks`; these only catch a runner that no longer starts or parses.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import stack_checks

    yield stack_checks


@pytest.mark.slow
def test_runner_answers_help() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "stack-checks"), "--help"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "usage: scripts/stack-checks" in done.stdout and "--skip-locust" in done.stdout


def test_the_key_line_is_the_one_inventiv_up_prints(stack_checks: ModuleType) -> None:
    # inventiv/supervisor.py prints it; the runner finds the key in it.
    source = (ROOT / "inventiv" / "supervisor.py").read_text()
    assert "admin key for organization 'demo' (shown once): {key}" in source
    match = stack_checks.KEY_LINE.search("admin key for organization 'demo' (shown once): ik_Ab-3_x\n")
    assert match is not None and match.group(1) == "ik_Ab-3_x"


LOCUST_REPORT = """\
Type     Name                 # reqs      # fails |    Avg     Min     Max    Med |   req/s  failures/s
--------|--------------------|-------|-------------|-------|-------|-------|-------|--------|-----------
POST     chat                     161     0(0.00%) |      4       2      31      4 |   16.45        0.00
--------|--------------------|-------|-------------|-------|-------|-------|-------|--------|-----------
         Aggregated               375     2(0.53%) |      4       2      37      4 |   38.32        0.20

Response time percentiles (approximated)
Type     Name                    50%    66%    75%    80%    90%    95%    98%    99%  99.9% 99.99%   100% # reqs
--------|-----------------|--------|------|------|------|------|------|------|------|------|------|------|------
         Aggregated                4      4      5      5      7      9     11     32     37     37     37    375
"""


def test_locust_summary(stack_checks: ModuleType) -> None:
    assert stack_checks.locust_summary(LOCUST_REPORT) == (
        "375 requests, 2 failures, 38.32 requests/s, median 4 ms, average 4 ms, max 37 ms, p95 9 ms, p99 32 ms"
    )
    assert stack_checks.locust_summary("nothing") == "(no Aggregated row in locust's report)"
