"""`scripts/stack-checks`: the operators' checks and the load tools against a fresh `inventiv up`, for CI.

Starts `inventiv up` on a new temporary data folder (embedded Postgres and Redis, the mock cloud, a free
port on 127.0.0.1, no INVENTIV_* setting of the caller's environment), reads the admin key it prints once,
waits for /readyz, then runs

  1. scripts/checks/run-all (deploys two instances, every check, tears them down);
  2. deploys two instances for the load tools; benchmarks/ab/run-ab for a few seconds per body;
     locust headless on benchmarks/locustfile.py; terminates the two instances;

then stops `up` with SIGINT and expects it to exit 0, terminates through the API whatever instance is
left, stops any mock worker process still alive (`inventiv up` leaves the mock cloud's servers running on
purpose) and any process still using the data folder. Prints a summary; exit 0 when every step passed.
The temporary folder (logs) is removed on success and kept on failure.

Standard library only; run it with the project's virtualenv Python (`make stack-checks`), which also
provides the `inventiv` command and, for the final clean-up, the mock cloud's stop_all_workers.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ROOT / "scripts" / "checks"
sys.path.insert(0, str(CHECKS))

import checklib  # noqa: E402  (scripts/checks is not a package)
from checklib import say  # noqa: E402

KEY_LINE = re.compile(r"admin key for organization '[^']+' \(shown once\): (ik_\S+)")
DEFAULT_LOAD_VENV = Path.home() / ".cache" / "inventiv" / "load-venv"
# Settings of the caller that must not reach the throwaway stack (a database URL above all).
_STRIPPED_PREFIXES = ("INVENTIV_", "SCW_", "WORKER_DATA_VOLUME_GB")


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class Run:
    """One stack-checks run: its folder, the `up` process, what each step gave."""

    args: argparse.Namespace
    tmp: Path
    started: float = field(default_factory=time.monotonic)
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    up: subprocess.Popen[str] | None = None
    key: str | None = None
    key_seen: threading.Event = field(default_factory=threading.Event)
    base_url: str = ""

    @property
    def data_dir(self) -> Path:
        return self.tmp / "data"

    def remaining(self) -> float:
        return float(self.args.deadline) - (time.monotonic() - self.started)

    def budget(self, wanted: float) -> float:
        left = self.remaining()
        if left <= 5:
            raise StepFailed(f"the run's {self.args.deadline:.0f} s deadline is spent")
        return min(wanted, left - 5)

    def step(self, name: str, body: Callable[[], str]) -> bool:
        """Run one step; any exception but an interrupt is its failure, so the clean-up and the summary
        still run after a crash (a timeout of a subprocess, an API answer of an unexpected shape)."""
        say(f"\n==== {name} (t={self.elapsed():.0f} s)")
        started = time.monotonic()
        try:
            detail, ok = body(), True
        except StepFailed as exc:
            detail, ok = str(exc), False
        except Exception as exc:
            if not isinstance(exc, checklib.CheckError):
                say(traceback.format_exc().rstrip())  # where it crashed, for whoever fixes it
            detail, ok = checklib.failure_text(exc), False
        seconds = time.monotonic() - started
        self.steps.append(Step(name, ok, seconds, detail))
        say(f"{'PASS' if ok else 'FAIL'} {name} ({seconds:.1f} s){': ' + detail if detail else ''}")
        return ok

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def api(self) -> checklib.Api:
        if self.key is None:
            raise StepFailed("no admin key")
        return checklib.Api(checklib.Config(self.base_url, self.key, self.args.model))

    def check_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("CHECK_INSTANCE_IDS", "OPENAI_API_KEY")}
        env.update(API_BASE_URL=self.base_url, API_KEY=self.key or "", MODEL=self.args.model, PYTHONUNBUFFERED="1")
        return env


class StepFailed(Exception):
    pass


# -- preflight ------------------------------------------------------------------------------------


def find_inventiv(explicit: str | None) -> list[str]:
    if explicit:
        return [explicit]
    venv = ROOT / ".venv" / "bin" / "inventiv"
    if venv.exists():
        return [str(venv)]
    found = shutil.which("inventiv")
    if found:
        return [found]
    return [sys.executable, "-m", "inventiv"]


def find_locust(explicit: str | None) -> str | None:
    for candidate in (explicit, os.environ.get("LOCUST"), str(DEFAULT_LOAD_VENV / "bin" / "locust")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("locust")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- inventiv up ----------------------------------------------------------------------------------


def start_up(run: Run, inventiv: list[str], port: int) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED_PREFIXES)}
    env.update(
        INVENTIV_DATA_DIR=str(run.data_dir),
        INVENTIV_GATEWAY_HOST="127.0.0.1",
        INVENTIV_GATEWAY_PORT=str(port),
        INVENTIV_GATEWAY_WORKERS=str(run.args.gateway_workers),
        INVENTIV_LOG_FORMAT="kv",
        PYTHONUNBUFFERED="1",
    )
    # An empty env file: the checkout's own .env (a developer's database URL, say) is then not read.
    env_file = run.tmp / "empty.env"
    env_file.touch()
    log = (run.tmp / "up.log").open("w")
    command = [*inventiv, "--env-file", str(env_file), "up"]
    say(f"   .. {' '.join(command)}  (INVENTIV_DATA_DIR={run.data_dir}, port {port}; log {run.tmp / 'up.log'})")
    # Its own session: a Ctrl-C of this runner must not stop the stack before the clean-up has used it.
    run.up = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
    )
    threading.Thread(target=_read_up_stdout, args=(run, run.up.stdout, run.tmp / "up.out"), daemon=True).start()
    run.base_url = f"http://127.0.0.1:{port}"

    deadline = time.monotonic() + run.budget(run.args.start_timeout)
    while not run.key_seen.wait(0.2):
        if run.up.poll() is not None:
            raise StepFailed(f"inventiv up exited with status {run.up.returncode} before printing a key: {_tail(run)}")
        if time.monotonic() > deadline:
            raise StepFailed(f"no admin key printed after {run.args.start_timeout:.0f} s: {_tail(run)}")
    while not _ready(run.base_url):
        if run.up.poll() is not None:
            raise StepFailed(f"inventiv up exited with status {run.up.returncode}: {_tail(run)}")
        if time.monotonic() > deadline:
            raise StepFailed(f"/readyz not 200 after {run.args.start_timeout:.0f} s: {_tail(run)}")
        time.sleep(0.2)
    assert run.key is not None
    return f"{run.base_url} ready, admin key {run.key[:7]}... captured"


def _read_up_stdout(run: Run, stream: IO[str] | None, copy: Path) -> None:
    if stream is None:
        return
    with copy.open("w") as out:
        for line in stream:
            match = KEY_LINE.search(line)
            if match:
                run.key = match.group(1)
                run.key_seen.set()
                line = line.replace(run.key, run.key[:7] + "...")
            out.write(line)
            out.flush()
            say(f"   up| {line.rstrip()}")


def _ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _tail(run: Run, lines: int = 15) -> str:
    try:
        text = (run.tmp / "up.log").read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n" + "\n".join("      " + line for line in text[-lines:])


def stop_up(run: Run) -> str:
    up = run.up
    if up is None:
        raise StepFailed("inventiv up was not started")
    if up.poll() is not None:
        raise StepFailed(f"inventiv up had exited on its own, status {up.returncode}: {_tail(run)}")
    started = time.monotonic()
    up.send_signal(signal.SIGINT)
    try:
        status = up.wait(timeout=run.args.stop_timeout)
    except subprocess.TimeoutExpired:
        _kill_group(up)
        raise StepFailed(f"inventiv up still running {run.args.stop_timeout:.0f} s after SIGINT: killed") from None
    took = time.monotonic() - started
    if status != 0:
        raise StepFailed(f"inventiv up exited with status {status} after SIGINT: {_tail(run)}")
    return f"exited 0, {took:.1f} s after SIGINT"


def _kill_group(proc: subprocess.Popen[str]) -> None:
    # The group of the process this runner started (its own session): up, its gateway and scheduler.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# -- subprocesses ---------------------------------------------------------------------------------


def run_streaming(command: Sequence[str], env: dict[str, str], timeout_s: float, prefix: str = "") -> tuple[int, str]:
    """Run command, printing its output as it comes; (status, output). SIGTERM then SIGKILL past timeout_s."""
    proc = subprocess.Popen(
        list(command), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            say(prefix + line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        status = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        say(f"{prefix}(ran past {timeout_s:.0f} s: SIGTERM)")
        _stop_child(proc)
        status = 124
    except KeyboardInterrupt:
        # Let it finish its own clean-up (run-all tears down what it deployed) before ours, whatever
        # signal comes next: the run ends in _clean_up either way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_child(proc)
        raise
    reader.join(timeout=5)
    return status, "".join(lines)


def _stop_child(proc: subprocess.Popen[str], grace_s: float = 60.0) -> None:
    """SIGTERM (unless it is exiting already), then SIGKILL after grace_s."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the steps ------------------------------------------------------------------------------------


def checks_step(run: Run) -> str:
    status, output = run_streaming([str(CHECKS / "run-all")], run.check_env(), run.budget(run.args.checks_timeout))
    verdicts = [line for line in output.splitlines() if re.match(r"^(PASS|FAIL) \S+$", line)]
    run.notes.append("run-all: " + ", ".join(verdicts))
    if status != 0:
        failed = [v.split()[1] for v in verdicts if v.startswith("FAIL")]
        raise StepFailed(f"run-all exit status {status}; failed: {', '.join(failed) or '?'}")
    return f"{len(verdicts)} checks passed"


def deploy_for_load(run: Run, created: list[str]) -> str:
    checklib.deploy_pair(run.api(), created, ready_timeout_s=run.budget(60), answer_timeout_s=run.budget(30))
    return f"instances {', '.join(map(checklib.short, created))} ready and answering"


def ab_step(run: Run) -> str:
    command = [str(ROOT / "benchmarks" / "ab" / "run-ab"), "-t", str(run.args.ab_seconds), "-n", "100000",
               "-c", str(run.args.ab_concurrency)]  # fmt: skip
    status, output = run_streaming(command, run.check_env(), run.budget(run.args.ab_seconds * 2 + 60))
    figures = [line.strip() for line in output.splitlines() if "requests/s, p50" in line]
    run.notes.extend(f"ab {line}" for line in figures)
    if status != 0:
        raise StepFailed(f"run-ab exit status {status}")
    rates = [re.match(r"(\w+): .*?: ([0-9.]+) requests/s", line) for line in figures]
    return "; ".join(f"{m.group(1)} {m.group(2)} requests/s" for m in rates if m)


def locust_step(run: Run, locust: str) -> str:
    command = [
        locust, "-f", str(ROOT / "benchmarks" / "locustfile.py"), "--headless", "-u", str(run.args.locust_users),
        "-r", str(run.args.locust_users), "-t", f"{run.args.locust_seconds}s", "--host", run.base_url,
        "--only-summary", "--stop-timeout", "5", "--exit-code-on-error", "1",
    ]  # fmt: skip
    status, output = run_streaming(command, run.check_env(), run.budget(run.args.locust_seconds + 60), "   locust| ")
    summary = locust_summary(output)
    run.notes.append(f"locust {summary}")
    for line in output.splitlines():
        if "locustfile: streams read" in line:
            run.notes.append("locust " + line.split("locustfile: ", 1)[1])
    if status != 0:
        raise StepFailed(f"locust exit status {status}: {summary}")
    return summary


# The Aggregated rows of locust's two final tables: counts and times, then the percentiles.
_LOCUST_TOTALS = re.compile(
    r"^\s*Aggregated\s+(?P<requests>\d+)\s+(?P<failures>\d+)\(\S+\)\s*\|\s*(?P<avg>\d+)\s+\d+\s+(?P<max>\d+)\s+"
    r"(?P<median>\d+)\s*\|\s*(?P<rps>[\d.]+)",
    re.MULTILINE,
)
_LOCUST_PERCENTILES = re.compile(r"^\s*Aggregated((?:\s+[\d.]+){12})\s*$", re.MULTILINE)


def locust_summary(output: str) -> str:
    """One line from locust's final report: requests, failures, requests/s and latencies."""
    totals = _LOCUST_TOTALS.search(output)
    if totals is None:
        return "(no Aggregated row in locust's report)"
    line = (
        f"{totals['requests']} requests, {totals['failures']} failures, {totals['rps']} requests/s, "
        f"median {totals['median']} ms, average {totals['avg']} ms, max {totals['max']} ms"
    )
    percentiles = _LOCUST_PERCENTILES.search(output)
    if percentiles is not None:
        values = percentiles.group(1).split()
        line += f", p95 {values[5]} ms, p99 {values[7]} ms"
    return line


def terminate_all(run: Run, ids: list[str] | None = None) -> str:
    """Terminate through the API the given instances (default: every one not terminated) and wait."""
    api = run.api()
    if ids is None:
        ids = [i["id"] for i in api.list_all("/instances") if i["status"] != "terminated"]
    failures = checklib.teardown(api, ids, max(10.0, run.remaining() - 5))
    if failures:
        raise StepFailed(f"{len(failures)} of {len(ids)} instance(s) not terminated: {'; '.join(failures)}")
    return f"{len(ids)} instance(s) terminated"


def leftover_workers(run: Run, python: str) -> str:
    """Stop every mock worker still alive; a failure when there was one (terminated instances stop theirs)."""
    code = (
        "import sys; from providers.mock.cloud import stop_all_workers; "
        "print(stop_all_workers(sys.argv[1]))"
    )  # fmt: skip
    mock_dir = run.data_dir / "mock-cloud"
    done = subprocess.run([python, "-c", code, str(mock_dir)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise StepFailed(f"stop_all_workers failed: {done.stderr.strip()[-500:]}")
    alive = int(done.stdout.strip() or 0)
    strays = _stray_processes(run.tmp)
    for pid in strays:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if alive or strays:
        raise StepFailed(f"{alive} mock worker(s) and {len(strays)} other process(es) of {run.tmp} were still running "
                         "(stopped now)")  # fmt: skip
    return "no mock worker and no process of the data folder left"


def _stray_processes(tmp: Path) -> list[int]:
    """Processes (but this one) whose command line names the run's folder: embedded services left behind."""
    mine = str(tmp)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if mine in cmdline:
            found.append(int(entry.name))
    return found


def venv_python(inventiv: list[str]) -> str:
    if len(inventiv) > 1:
        return inventiv[0]
    candidate = Path(inventiv[0]).with_name("python")
    return str(candidate) if candidate.exists() else sys.executable


# -- main -----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/stack-checks",
        description="start `inventiv up` on a fresh data folder, run scripts/checks/run-all, ab and locust "
        "against it, stop it and clean up; exit 0 when everything passed",
    )
    add = parser.add_argument
    add("--port", type=int, help="gateway port (default: a free one)")
    add("--gateway-workers", type=int, default=2, help="gateway processes (default 2)")
    add("--model", default=checklib.DEFAULT_MODEL, help=f"model of the checks (default {checklib.DEFAULT_MODEL})")
    add("--inventiv", help="the inventiv command (default: .venv/bin/inventiv)")
    add("--locust", help=f"the locust command (default: $LOCUST, {DEFAULT_LOAD_VENV}/bin/locust, PATH)")
    add("--skip-ab", action="store_true", help="do not run ab")
    add("--skip-locust", action="store_true", help="do not run locust")
    add("--ab-seconds", type=int, default=3, help="seconds of ab per request body (default 3)")
    add("--ab-concurrency", type=int, default=8, help="ab concurrency (default 8)")
    add("--locust-seconds", type=int, default=10, help="seconds of locust (default 10)")
    add("--locust-users", type=int, default=5, help="locust users (default 5)")
    add("--start-timeout", type=float, default=90.0, help="seconds for up to be ready (default 90)")
    add("--stop-timeout", type=float, default=45.0, help="seconds for up to exit after SIGINT (default 45)")
    add("--checks-timeout", type=float, default=120.0, help="seconds for run-all (default 120)")
    add("--deadline", type=float, default=180.0, help="seconds for the whole run (default 180)")
    add("--keep", action="store_true", help="keep the temporary folder (logs, data) even on success")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    inventiv = find_inventiv(args.inventiv)
    locust = None if args.skip_locust else find_locust(args.locust)
    missing = []
    if not args.skip_ab and shutil.which("ab") is None:
        missing.append("ab (apt-get install apache2-utils, or `make load-tools`)")
    if not args.skip_locust and locust is None:
        missing.append(f"locust (`make load-tools` installs it in {DEFAULT_LOAD_VENV}; or --locust PATH)")
    if missing:
        say("FAIL missing: " + "; ".join(missing) + " (or --skip-ab / --skip-locust)")
        return 1

    run = Run(args, Path(tempfile.mkdtemp(prefix="inventiv-stack-checks-")))
    say(f"== stack-checks: inventiv up on {run.tmp}, then run-all, ab, locust; deadline {args.deadline:.0f} s")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, checklib.on_signal)
    load_ids: list[str] = []
    try:
        if run.step("inventiv up", lambda: start_up(run, inventiv, args.port or free_port())):
            run.step("scripts/checks/run-all", lambda: checks_step(run))
            if not (args.skip_ab and args.skip_locust) and run.step(
                "deploy 2 instances for the load", lambda: deploy_for_load(run, load_ids)
            ):
                if not args.skip_ab:
                    run.step("benchmarks/ab/run-ab", lambda: ab_step(run))
                if locust is not None:
                    run.step("locust", lambda: locust_step(run, locust))
                run.step("terminate the load instances", lambda: terminate_all(run, load_ids))
    except KeyboardInterrupt:
        run.steps.append(Step("interrupted", False, 0.0))
        say("FAIL interrupted: cleaning up")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _clean_up(run, venv_python(inventiv))
    return _summary(run)


def _clean_up(run: Run, python: str) -> None:
    up_alive = run.up is not None and run.up.poll() is None
    if up_alive and run.key is not None:
        run.step("no instance left (API)", lambda: terminate_all(run))
    if run.up is not None:
        run.step("stop inventiv up (SIGINT)", lambda: stop_up(run))
    run.step("no process left", lambda: leftover_workers(run, python))


def _log_errors(run: Run) -> None:
    """A note on the error lines of the stack's log: not a failure, a pointer for whoever reads the run."""
    try:
        lines = (run.tmp / "up.log").read_text(errors="replace").splitlines()
    except OSError:
        return
    errors = [line for line in lines if re.match(r"^\S+\s+(error|critical)\s", line)]
    if errors:
        run.notes.append(f"up.log holds {len(errors)} error line(s), the first: {errors[0][:200]}")


def _summary(run: Run) -> int:
    _log_errors(run)
    failed = [s for s in run.steps if not s.ok]
    say("\n==== stack-checks summary")
    for s in run.steps:
        say(f"{'PASS' if s.ok else 'FAIL'} {s.name} ({s.seconds:.1f} s){': ' + s.detail if s.detail else ''}")
    for note in run.notes:
        say(f"     {note}")
    verdict = "PASS" if run.steps and not failed else "FAIL"
    if verdict == "PASS" and not run.args.keep:
        shutil.rmtree(run.tmp, ignore_errors=True)
        where = "temporary folder removed"
    else:
        where = f"logs and data kept in {run.tmp}"
    say(f"==== stack-checks: {verdict} ({len(run.steps) - len(failed)} passed, {len(failed)} failed) in "
        f"{run.elapsed():.0f} s; {where}")  # fmt: skip
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
