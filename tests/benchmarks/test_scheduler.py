"""benchmarks/scheduler.py: the chaos run's report, and that the scale runs are still one flag away."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from scheduler_chaos import ChaosFigures

from benchmarks.scheduler import render

ROOT = Path(__file__).resolve().parents[2]


def test_render_reports_the_time_the_kills_and_everything_left() -> None:
    figures = ChaosFigures(
        50, kills=24, converge_s=95.5, injected_errors=500, slowed_calls=577, duplicate_servers=1,
        left={"servers": 0, "volumes": 2}, statuses={"terminated": 50},
    )  # fmt: skip

    lines = render(figures).splitlines()

    assert lines[0] == "lifecycles: 50, SIGKILLs: 24"
    assert "wall time to converge: 95.5 s" in lines
    assert "duplicate servers / data volumes: 1 / 0" in lines
    assert lines[-1] == "left in the cloud: servers 0, volumes 2"


@pytest.mark.slow
def test_without_chaos_it_runs_the_scale_benchmark() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scheduler", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "--sizes" in done.stdout, "the scale benchmark's options"
