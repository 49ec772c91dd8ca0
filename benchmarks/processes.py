"""Processes the benchmark starts: pinned to one CPU, logged to a file, stopped by their own pid.

Only what was started here is ever signalled: the process itself, then any descendant it left behind
(found by walking /proc from its pid before it exited).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from benchmarks import procfs
from benchmarks.loadgen import Endpoint, build_request, fetch

LOOPBACK = "127.0.0.1"
# A gateway or router that has not answered within this long after its start is reported as failed.
_READY_TIMEOUT_S = 90.0
_READY_POLL_S = 0.2
_STOP_TIMEOUT_S = 15.0
# Lines of a failed process's log quoted in the error.
_LOG_TAIL_LINES = 15


class ProcessFailed(RuntimeError):
    """A process the benchmark needs exited or never became ready; the message quotes its log."""


@dataclass
class Started:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:])


def free_port() -> int:
    """A port nothing listens on right now (the kernel's choice; another process could take it first,
    which then shows as a start failure with the log saying so)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _log_file(path: Path) -> IO[bytes]:
    return path.open("ab")


async def start(name: str, argv: Sequence[str], *, cpu: int, log_dir: Path,
                env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Started:  # fmt: skip
    log_path = log_dir / f"{name}.log"
    with _log_file(log_path) as log:
        process = await asyncio.create_subprocess_exec(
            "taskset", "-c", str(cpu), *argv,
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )  # fmt: skip
    return Started(name, process, log_path)


async def stop(started: Started) -> None:
    """SIGTERM, then SIGKILL after a while; then whatever descendants it left."""
    process = started.process
    if process.returncode is not None:
        return
    descendants = [pid for pid in procfs.process_tree(process.pid) if pid != process.pid]
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), _STOP_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
    for pid in descendants:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def wait_ready(
    started: Started, endpoint: Endpoint, request: bytes, timeout_s: float = _READY_TIMEOUT_S
) -> float:
    """Send `request` until it is answered 200; returns the seconds it took."""
    began = time.monotonic()
    last = "no answer"
    while time.monotonic() - began < timeout_s:
        if started.process.returncode is not None:
            raise ProcessFailed(
                f"{started.name} exited with status {started.process.returncode}; log:\n{started.log_tail()}"
            )
        try:
            response = await fetch(endpoint, request, timeout_s=5.0)
        except (OSError, TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if response.status == 200:
                return time.monotonic() - began
            last = f"HTTP {response.status}: {response.body[:200]!r}"
            if response.status == 500:
                # A bug, not a process still starting: waiting longer would only hide it.
                raise ProcessFailed(f"{started.name} answered {last}; log:\n{started.log_tail()}")
        await asyncio.sleep(_READY_POLL_S)
    raise ProcessFailed(f"{started.name} not ready after {timeout_s:.0f} s ({last}); log:\n{started.log_tail()}")


def get_request(endpoint: Endpoint, path: str) -> bytes:
    return build_request("GET", endpoint, path)
