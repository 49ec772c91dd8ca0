"""scripts/stack-checks, the CI runner: it starts, and it reads what `inventiv up` and locust print.

The real run is CI's `make stack-checks`; these only catch a runner that no longer starts or parses.
"""

from __future__ import annotations

import argparse
import re
import signal
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


def test_a_step_that_crashes_is_a_failed_step(
    stack_checks: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = stack_checks.Run(argparse.Namespace(deadline=60.0), tmp_path)

    def timeout() -> str:
        raise subprocess.TimeoutExpired(["stop_all_workers"], 60)

    def refused() -> str:
        raise stack_checks.StepFailed("refused")

    assert run.step("a subprocess timing out", timeout) is False
    assert run.step("an odd answer", lambda: {"status": "ready"}["id"]) is False
    assert run.step("a failure", refused) is False
    assert run.step("a pass", lambda: "fine") is True
    assert [(s.name, s.ok, s.detail) for s in run.steps] == [
        ("a subprocess timing out", False, "TimeoutExpired: Command '['stop_all_workers']' timed out after 60 seconds"),
        ("an odd answer", False, "KeyError: 'id'"),
        ("a failure", False, "refused"),
        ("a pass", True, "fine"),
    ]
    out = capsys.readouterr().out
    assert out.count("Traceback") == 2  # the crashes say where they happened; a plain failure does not

    def interrupted() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # not a step's failure: the runner cleans up and stops
        run.step("interrupted", interrupted)


def test_a_crashing_step_still_cleans_up_and_sums_up(
    stack_checks: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def crash(run: object) -> str:
        raise KeyError("status")

    cleaned: list[object] = []
    monkeypatch.setattr(stack_checks.tempfile, "mkdtemp", lambda prefix: str(tmp_path))
    monkeypatch.setattr(stack_checks, "start_up", lambda run, inventiv, port: "up")
    monkeypatch.setattr(stack_checks, "checks_step", crash)
    monkeypatch.setattr(stack_checks, "_clean_up", lambda run, python: cleaned.append(run))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = stack_checks.main(["--skip-ab", "--skip-locust", "--port", "9"])
    finally:
        for sig, handler in handlers.items():  # main ignores both signals once it cleans up
            signal.signal(sig, handler)
    assert status == 1 and len(cleaned) == 1
    out = capsys.readouterr().out
    assert re.search(r"^FAIL scripts/checks/run-all \([0-9.]+ s\): KeyError: 'status'$", out, re.MULTILINE)
    assert "==== stack-checks: FAIL (1 passed, 1 failed)" in out
