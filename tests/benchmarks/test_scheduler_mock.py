"""benchmarks/scheduler_mock.py: the scheduler's own CPU read from /proc, and the report."""

from __future__ import annotations

import os

from benchmarks.procfs import own_cpu_seconds, own_cpu_ticks
from benchmarks.scheduler_mock import MockFigures, render

# /proc/PID/stat of a process whose name holds a space and parentheses: utime 250, stime 50 ticks, and
# 900 + 100 ticks of reaped children (worker processes) that are not the scheduler's own.
STAT = "4242 (python (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 900 100 20 0 3 0 100 1000 200"


def test_own_cpu_ticks_counts_utime_and_stime_only() -> None:
    assert own_cpu_ticks(STAT) == 300


def test_own_cpu_seconds_reads_a_live_process() -> None:
    assert own_cpu_seconds(os.getpid()) > 0


def test_render() -> None:
    lines = render(MockFigures(50, ready_s=30.5, released_s=8.0, scheduler_cpu_s=2.5)).splitlines()
    assert lines[0] == "mock cloud, 50 instances (a worker process each)"
    assert "scheduler CPU: 2.5 s (50.0 ms per instance)" in lines
