"""CPU time, memory and steal from /proc: how the benchmark charges work to the process it measures.

A proxy's CPU time is utime + stime of every live process in its tree (plus what its reaped children
used), read from /proc/PID/stat, so threads (tokio's, the usage writer's) and helper processes count.
The time it waited for a CPU, runnable while another task ran there, is the second field of each of
its threads' /proc/PID/task/TID/schedstat (the kernel's `run_delay`, in ns; sched-stats.rst).
The parsers take the file's text and are tested on fixed samples; the readers around them are thin.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")

# Positions in /proc/PID/stat after the `(comm)` field (proc(5) numbers fields from 1; `state` is 3).
_PPID, _UTIME, _STIME, _CUTIME, _CSTIME = 1, 11, 12, 13, 14
# Columns of a `cpuN` line in /proc/stat after its name (proc(5)): user nice system idle iowait irq
# softirq steal.
_BUSY_COLUMNS = (0, 1, 2, 5, 6)
_STEAL_COLUMN = 7


def _fields(stat_text: str) -> list[str]:
    # The command name may hold spaces and parentheses; everything after its last `)` is fixed.
    return stat_text[stat_text.rfind(")") + 2 :].split()


def parent_pid(stat_text: str) -> int:
    return int(_fields(stat_text)[_PPID])


def cpu_ticks(stat_text: str) -> int:
    """utime + stime of the process and of its children it has waited for, in clock ticks."""
    fields = _fields(stat_text)
    return sum(int(fields[i]) for i in (_UTIME, _STIME, _CUTIME, _CSTIME))


def own_cpu_ticks(stat_text: str) -> int:
    """utime + stime of the process alone, its reaped children (worker processes) left out."""
    fields = _fields(stat_text)
    return int(fields[_UTIME]) + int(fields[_STIME])


def own_cpu_seconds(pid: int) -> float:
    """The CPU one live process used itself (0.0 once it is gone)."""
    text = _read(_PROC / str(pid) / "stat")
    return own_cpu_ticks(text) / CLOCK_TICKS if text is not None else 0.0


def memory_kb(status_text: str) -> tuple[int, int]:
    """(VmHWM, VmRSS) from /proc/PID/status, in kB: the peak and the current resident set."""
    values = {"VmHWM": 0, "VmRSS": 0}
    for line in status_text.splitlines():
        name, _, rest = line.partition(":")
        if name in values:
            values[name] = int(rest.split()[0])
    return values["VmHWM"], values["VmRSS"]


# Columns of a /proc/net/tcp line (proc(5)): sl local_address rem_address st ... uid timeout inode.
_LOCAL, _REMOTE, _INODE = 1, 2, 9


def tcp_ports(net_tcp_text: str) -> dict[int, tuple[int, int]]:
    """Socket inode -> (local port, remote port) from /proc/net/tcp or tcp6 text (addresses are
    `HEXADDR:HEXPORT`); the header lines are skipped."""
    ports = {}
    for line in net_tcp_text.splitlines():
        columns = line.split()
        if len(columns) <= _INODE or not columns[0].rstrip(":").isdigit():
            continue
        local = int(columns[_LOCAL].rsplit(":", 1)[1], 16)
        remote = int(columns[_REMOTE].rsplit(":", 1)[1], 16)
        ports[int(columns[_INODE])] = (local, remote)
    return ports


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Per-CPU counters from /proc/stat, in ticks."""

    busy: dict[str, int]
    steal: dict[str, int]


def cpu_times(proc_stat_text: str) -> CpuTimes:
    busy: dict[str, int] = {}
    steal: dict[str, int] = {}
    for line in proc_stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        columns = [int(v) for v in rest.split()]
        busy[name] = sum(columns[i] for i in _BUSY_COLUMNS)
        steal[name] = columns[_STEAL_COLUMN]
    return CpuTimes(busy, steal)


def percent_of_wall(before: dict[str, int], after: dict[str, int], wall_s: float) -> dict[str, float]:
    """Each counter's growth as a percentage of `wall_s` seconds of one CPU."""
    if wall_s <= 0:
        raise ValueError("wall time must be positive")
    return {name: 100.0 * (after[name] - before.get(name, 0)) / CLOCK_TICKS / wall_s for name in after}


# -- readers -------------------------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # the process ended between listing and reading
        return None


def process_tree(root: int) -> list[int]:
    """The root and all its live descendants."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            text = _read(entry / "stat")
            if text is not None:
                children[parent_pid(text)].append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        if (_PROC / str(pid)).exists():
            tree.append(pid)
            stack.extend(children.get(pid, ()))
    return tree


def tree_cpu_seconds(root: int) -> float:
    ticks = 0
    for pid in process_tree(root):
        text = _read(_PROC / str(pid) / "stat")
        if text is not None:
            ticks += cpu_ticks(text)
    return ticks / CLOCK_TICKS


def run_delay_ns(schedstat_text: str) -> int:
    """Nanoseconds a thread has spent runnable but waiting for a CPU, from /proc/PID/task/TID/schedstat
    (three fields: time on CPU, time waiting on a run queue, timeslices run)."""
    return int(schedstat_text.split()[1])


def tree_wait_seconds(root: int) -> float | None:
    """Time every live thread of the process tree has waited for a CPU while runnable, in seconds; None
    where the kernel keeps no such count (built without CONFIG_SCHED_INFO) or the process is gone. A
    thread that ends between two readings takes its count with it: a difference can read low, not high."""
    waited, read = 0, False
    for pid in process_tree(root):
        tasks = _PROC / str(pid) / "task"
        try:
            threads = list(tasks.iterdir())
        except OSError:
            continue
        for thread in threads:
            text = _read(thread / "schedstat")
            if text:
                waited += run_delay_ns(text)
                read = True
    return waited / 1e9 if read else None


def tree_memory_kb(root: int) -> tuple[int, int]:
    """(sum of VmHWM, sum of VmRSS) over the process tree, in kB."""
    hwm = rss = 0
    for pid in process_tree(root):
        text = _read(_PROC / str(pid) / "status")
        if text is not None:
            peak, current = memory_kb(text)
            hwm, rss = hwm + peak, rss + current
    return hwm, rss


def tree_fd_targets(root: int) -> list[str]:
    """What each open file descriptor of the process tree points at (`socket:[INODE]`, `pipe:[...]`,
    a path, `anon_inode:[eventpoll]`), as readlink(2) shows it under /proc/PID/fd."""
    targets = []
    for pid in process_tree(root):
        fd_dir = _PROC / str(pid) / "fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:  # the process ended between listing and reading
            continue
        for name in names:
            try:
                targets.append(os.readlink(fd_dir / name))
            except OSError:  # closed meanwhile
                continue
    return targets


def read_tcp_ports() -> dict[int, tuple[int, int]]:
    text = "".join(_read(_PROC / "net" / name) or "" for name in ("tcp", "tcp6"))
    return tcp_ports(text)


def read_cpu_times() -> CpuTimes:
    return cpu_times((_PROC / "stat").read_text())
