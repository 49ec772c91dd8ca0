"""The process group on real child processes: one ends -> the others stopped; SIGTERM forwarded; grace, then kill."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

from inventiv.process_group import Outcome, supervise

# A child that sleeps until stopped, one that ignores SIGTERM, one that exits 0 on it: each says when ready.
_SLEEPER = "import time; print('ready', flush=True); time.sleep(60)"
_DEAF = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
_DRAINS = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); "
           "print('ready', flush=True); time.sleep(60)")


def _start(code: str) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None
    with child.stdout:
        assert child.stdout.readline() == b"ready\n"
    return child


def _exiting(status: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"import sys; sys.exit({status})"])


def test_one_child_ending_stops_the_others_and_gives_the_group_its_status() -> None:
    sleeper = _start(_SLEEPER)
    outcome = supervise([sleeper, _exiting(3)], grace_s=10, poll_s=0.02)
    assert outcome == Outcome(signalled=False, first_exit=3, exit_codes=(-signal.SIGTERM, 3))
    assert outcome.status == 3


def test_a_child_that_ends_with_0_on_its_own_still_fails_the_group() -> None:
    assert supervise([_start(_SLEEPER), _exiting(0)], grace_s=10, poll_s=0.02).status == 1


def test_sigterm_to_the_group_is_forwarded_to_every_child_and_the_handler_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    children = [_start(_DRAINS), _start(_DRAINS)]
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
    outcome = supervise(children, grace_s=10, poll_s=0.02)
    assert outcome == Outcome(signalled=True, first_exit=None, exit_codes=(0, 0))
    assert outcome.status == 0
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_child_still_running_after_the_grace_is_killed() -> None:
    deaf = _start(_DEAF)
    started = time.monotonic()
    outcome = supervise([deaf, _exiting(1)], grace_s=0.5, poll_s=0.02)
    assert outcome.exit_codes == (-signal.SIGKILL, 1)
    assert 0.5 <= time.monotonic() - started < 10


def test_spawned_multiprocessing_children_are_supervised_alike() -> None:
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=time.sleep, args=(60,)), ctx.Process(target=sys.exit, args=(4,))]
    for child in children:
        child.start()
    outcome = supervise(children, grace_s=10, poll_s=0.02)
    assert (outcome.first_exit, outcome.exit_codes) == (4, (-signal.SIGTERM, 4))
