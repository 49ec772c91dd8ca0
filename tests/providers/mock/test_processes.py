"""providers.mock.processes: a worker that ignores SIGTERM is killed after its grace; a pid is ours only
with its start time."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from providers.mock.processes import ProcessRef, is_alive, start_time, stop

# Ignores SIGTERM, says so, then waits to be killed.
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
)
SLEEPER = "import time; print('ready', flush=True); time.sleep(60)"


@contextmanager
def spawned(code: str) -> Iterator[tuple[subprocess.Popen[str], ProcessRef]]:
    """A process in a session of its own, as the mock cloud starts its workers; killed on the way out."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc, ProcessRef(proc.pid, start_time(proc.pid))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        assert proc.stdout is not None
        proc.stdout.close()


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    with spawned(STUBBORN) as (proc, ref):
        began = time.monotonic()
        stop(ref, grace_s=0.3)
        assert time.monotonic() - began >= 0.3, "SIGTERM alone cannot have stopped it"
        assert proc.wait(5) == -9
        assert not is_alive(ref)


def test_a_pid_is_ours_only_with_its_start_time() -> None:
    with spawned(SLEEPER) as (_, ref):
        assert is_alive(ref)
        assert ref.start_time is not None
        assert not is_alive(ProcessRef(ref.pid, ref.start_time - 1)), "the same pid, started at another time"


def test_stopping_a_process_that_is_gone_does_nothing() -> None:
    with spawned(SLEEPER) as (proc, ref):
        proc.kill()
        proc.wait(5)
        began = time.monotonic()
        stop(ref, grace_s=5.0)
        assert time.monotonic() - began < 1.0
        assert not is_alive(ref)
