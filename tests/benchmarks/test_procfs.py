from __future__ import annotations

import os

import pytest

from benchmarks import procfs

# /proc/PID/stat of a process whose name holds a space and a parenthesis (proc(5) allows both).
_STAT = (
    "4242 (sglang::router (x)) S 4200 4242 4200 0 -1 4194560 1000 0 0 0 "
    "150 40 7 3 20 0 5 0 123456 272420864 23020 18446744073709551615"
)
_STATUS = """Name:\tpython
VmPeak:\t  300000 kB
VmHWM:\t  181234 kB
VmRSS:\t  150000 kB
Threads:\t3
"""
_PROC_STAT = """cpu  68934 0 24317 186767 3569 0 1983 403 0 0
cpu0 100 5 50 1000 7 2 3 11 0 0
cpu1 200 0 60 900 1 4 6 22 0 0
intr 12345
"""


def test_stat_fields_after_a_name_with_spaces_and_parentheses() -> None:
    assert procfs.parent_pid(_STAT) == 4200
    # utime 150 + stime 40 + cutime 7 + cstime 3
    assert procfs.cpu_ticks(_STAT) == 200


def test_memory_reads_peak_and_current_resident_set() -> None:
    assert procfs.memory_kb(_STATUS) == (181234, 150000)
    assert procfs.memory_kb("Name:\tkthreadd\n") == (0, 0)


def test_cpu_times_per_cpu_busy_and_steal() -> None:
    times = procfs.cpu_times(_PROC_STAT)
    # busy = user + nice + system + irq + softirq (idle and iowait are not busy)
    assert times.busy == {"cpu0": 100 + 5 + 50 + 2 + 3, "cpu1": 200 + 60 + 4 + 6}
    assert times.steal == {"cpu0": 11, "cpu1": 22}


def test_percent_of_wall() -> None:
    ticks = procfs.CLOCK_TICKS
    before = {"cpu0": 0, "cpu1": 10}
    after = {"cpu0": ticks // 2, "cpu1": 10 + ticks}
    assert procfs.percent_of_wall(before, after, 2.0) == pytest.approx({"cpu0": 25.0, "cpu1": 50.0})
    with pytest.raises(ValueError):
        procfs.percent_of_wall(before, after, 0.0)


def test_readers_on_this_process() -> None:
    pid = os.getpid()
    assert pid in procfs.process_tree(pid)
    assert procfs.tree_cpu_seconds(pid) > 0
    hwm, rss = procfs.tree_memory_kb(pid)
    assert hwm >= rss > 0
    assert procfs.process_tree(2**22 + 1) == []  # above pid_max: no such process
