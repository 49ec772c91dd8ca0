from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

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


def test_fd_targets_of_this_process_and_its_children() -> None:
    pid = os.getpid()
    before = procfs.tree_fd_targets(pid)
    read_end, write_end = os.pipe()
    try:
        targets = procfs.tree_fd_targets(pid)
        assert len(targets) == len(before) + 2
        assert sum(t.startswith("pipe:[") for t in targets) == sum(t.startswith("pipe:[") for t in before) + 2
        # A child's descriptors count too (it inherits none of ours here, but has its own 0, 1, 2).
        with subprocess.Popen(["sleep", "5"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL) as child:
            try:
                assert len(procfs.tree_fd_targets(pid)) >= len(targets) + 3
            finally:
                child.kill()
    finally:
        os.close(read_end)
        os.close(write_end)
    assert procfs.tree_fd_targets(2**22 + 1) == []


# Two lines of /proc/net/tcp: a listener on 127.0.0.1:8080 and a connection 127.0.0.1:41234 -> :6379.
_NET_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 10169 1 0 100 0 0 10 0
  12: 0100007F:A0D2 0100007F:18EB 01 00000000:00000000 00:00000000 00000000  1000        0 20333 1 0 20 4 30 10 -1
"""
# tcp6: a listener on [::1]:5432 (the header is shortened; the parser skips it).
_NET_TCP6 = (
    "  sl  local_address                         remote_address                        st tx_queue\n"
    "   0: 00000000000000000000000001000000:1538 00000000000000000000000000000000:0000 0A "
    "00000000:00000000 00:00000000 00000000  1000        0 30444 1 0 100 0 0 10 0\n"
)


def test_tcp_ports_by_socket_inode() -> None:
    assert procfs.tcp_ports(_NET_TCP) == {10169: (8080, 0), 20333: (41170, 6379)}
    assert procfs.tcp_ports(_NET_TCP6) == {30444: (5432, 0)}
    assert procfs.tcp_ports("") == {}


def test_tcp_ports_of_this_machine_include_a_listener_of_ours() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        inode = os.fstat(listener.fileno()).st_ino
        assert procfs.read_tcp_ports()[inode] == (port, 0)


def test_run_delay_is_the_second_schedstat_field() -> None:
    # /proc/PID/task/TID/schedstat: ns on CPU, ns runnable but waiting for one, timeslices run.
    assert procfs.run_delay_ns("2541318791 180453202 9017\n") == 180453202


def test_wait_counts_every_process_of_the_tree() -> None:
    """Two busy children pinned to one CPU wait for each other, and the reader, given their parent, sees it."""
    cpu = str(min(os.sched_getaffinity(0)))
    spin = "import time\nuntil = time.monotonic() + 0.6\nwhile time.monotonic() < until: pass"
    children = [subprocess.Popen(["taskset", "-c", cpu, sys.executable, "-c", spin]) for _ in range(2)]
    try:
        before = procfs.tree_wait_seconds(os.getpid())
        # Read while they run: a process that has ended is no longer in the tree.
        time.sleep(0.4)
        during = procfs.tree_wait_seconds(os.getpid())
    finally:
        for child in children:
            child.wait()
    assert before is not None and during is not None
    # Each waits about half of the 0.4 s; a loaded machine only adds to it.
    assert during - before > 0.1
