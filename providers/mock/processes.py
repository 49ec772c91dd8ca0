"""The mock cloud's servers are real local processes: start, probe and stop them by pid.

A process is known by its pid and its kernel start time, so a pid reused by an unrelated process after
ours died is never mistaken for it (nor killed). Workers run in their own session (process group), so
stopping one stops anything it started, and a scheduler restart does not take them down.
Blocking calls: async callers run them in a thread.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from providers.base import TransientError

# Popen objects of the workers this process started, kept so they are reaped once dead (a dead child
# that is never waited for stays a zombie, which looks alive to kill(pid, 0)) and never garbage
# collected while running (Popen warns about that).
_children: dict[int, subprocess.Popen[bytes]] = {}

# How often a stop or a wait looks again: short, a local process exits within milliseconds of SIGKILL.
_POLL_S = 0.02
# After SIGKILL the kernel needs a moment to tear the process down.
_KILL_WAIT_S = 5.0
# Tries at finding a port no other mock server holds before giving up.
_PORT_TRIES = 50


@dataclass(frozen=True, slots=True)
class ProcessRef:
    pid: int
    # Kernel start time (clock ticks since boot), None where /proc is not available.
    start_time: int | None


def free_port(taken: Collection[int]) -> int:
    """A port free on 127.0.0.1 now and not in `taken` (ports already given to other mock servers)."""
    for _ in range(_PORT_TRIES):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in taken:
            return port
    raise TransientError("mock cloud: no free local port for a worker")


def spawn_worker(
    port: int, model: str | None, log_path: Path, extra_args: Sequence[str] = (), api_key: str | None = None
) -> ProcessRef:
    """Start `python -m providers.mock.worker` on 127.0.0.1:port, detached, output to `log_path`.

    `api_key` goes in the environment (VLLM_API_KEY, as vLLM reads it), never on the command line.
    """
    command = [sys.executable, "-m", "providers.mock.worker", "--host", "127.0.0.1", "--port", str(port)]
    if model:
        command += ["--model", model]
    command += list(extra_args)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        env = {k: v for k, v in os.environ.items() if k != "VLLM_API_KEY"}
        if api_key:
            env["VLLM_API_KEY"] = api_key
        proc = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    return ProcessRef(proc.pid, start_time(proc.pid))


def start_time(pid: int) -> int | None:
    """The process's start time from /proc, or None if it is gone, a zombie, or /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(ref: ProcessRef) -> bool:
    child = _children.get(ref.pid)
    if child is not None and child.poll() is not None:
        # pop, not del: a stop outside the state lock may have reaped it in another thread meanwhile.
        _children.pop(ref.pid, None)
        return False
    if not Path("/proc").is_dir():
        return _signal_alive(ref.pid)
    current = start_time(ref.pid)
    return current is not None and (ref.start_time is None or current == ref.start_time)


def _signal_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(ref: ProcessRef, grace_s: float) -> None:
    """SIGTERM the worker's process group, SIGKILL it after `grace_s`; returns once it is gone."""
    if not is_alive(ref):
        return
    _signal_group(ref, signal.SIGTERM)
    if _wait_gone(ref, grace_s):
        return
    _signal_group(ref, signal.SIGKILL)
    if not _wait_gone(ref, _KILL_WAIT_S):
        raise TransientError(f"mock cloud: worker process {ref.pid} survived SIGKILL")


def _signal_group(ref: ProcessRef, sig: signal.Signals) -> None:
    try:
        # The worker leads its own session, so its group id is its pid; anything else means the pid
        # is no longer our worker's and only the process itself is signalled.
        if os.getpgid(ref.pid) == ref.pid:
            os.killpg(ref.pid, sig)
        else:
            os.kill(ref.pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(ref: ProcessRef, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while is_alive(ref):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True
