"""Child processes that run and stop together: SIGINT or SIGTERM, or any child ending, stops them all.

`inventiv up` (the gateway and the scheduler, as `inventiv` subprocesses) and a gateway of several
processes (spawned multiprocessing children) both run their children through `supervise`. Stopping sends
SIGTERM to every child still running (each drains), waits for them up to a grace shared by all, then
kills what is left. A half-running group is worse than a stopped one.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

# Poll the children this often: the group notices a death within it; the CPU cost is negligible.
POLL_S = 0.2
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Child = subprocess.Popen[bytes] | BaseProcess


@dataclass(frozen=True)
class Outcome:
    signalled: bool  # SIGINT or SIGTERM stopped the group
    first_exit: int | None  # how the child that ended on its own ended (None when signalled)
    exit_codes: tuple[int | None, ...]  # every child's, after the stop (negative: killed by that signal)

    @property
    def status(self) -> int:
        """The group's exit status: 0 when it was asked to stop, else the first child's, and at least 1."""
        if self.signalled:
            return 0
        return self.first_exit if self.first_exit is not None and self.first_exit > 0 else 1


def supervise(children: Sequence[Child], grace_s: float, poll_s: float = POLL_S) -> Outcome:
    """Wait for a stop signal or for any child to end, then stop them all. Call from the main thread."""
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in _STOP_SIGNALS}
    try:
        first_exit = None
        while not stopping:
            ended = [code for code in map(exit_code, children) if code is not None]
            if ended:
                first_exit = ended[0]
                break
            time.sleep(poll_s)
        stop(children, grace_s)
        return Outcome(stopping, first_exit, tuple(map(exit_code, children)))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop(children: Sequence[Child], grace_s: float) -> None:
    """SIGTERM to every child still running; SIGKILL to any still running `grace_s` later."""
    for child in children:
        if exit_code(child) is None:
            child.terminate()  # SIGTERM, for both kinds
    deadline = time.monotonic() + grace_s
    for child in children:
        if not _wait(child, max(0.0, deadline - time.monotonic())):
            child.kill()
            _wait(child, None)


def exit_code(child: Child) -> int | None:
    """None while it runs (and reaps it once it ended)."""
    return child.poll() if isinstance(child, subprocess.Popen) else child.exitcode


def _wait(child: Child, timeout_s: float | None) -> bool:
    if isinstance(child, subprocess.Popen):
        try:
            child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True
    child.join(timeout_s)
    return child.exitcode is not None
