"""The peer the gateway is measured against: sglang-router (Rust), from its own venv outside the repo.

Run as the peer harness the issue cites (bench-peers) runs it: round robin over one worker, logging at
warn (at its default level it writes two lines per request, which nginx and our gateway do not). It
probes the worker's /server_info and /model_info at start; the mock worker lacks them, which it only
warns about.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

NAME = "sglang-router"
PACKAGE = "sglang-router"
# A venv of its own: its dependencies never meet the project's.
VENV = Path(tempfile.gettempdir()) / "inventiv-bench-sglang-router"
_INSTALL_TIMEOUT_S = 600


class PeerUnavailable(RuntimeError):
    """The peer could not be installed; the benchmark runs without it and says why."""


def executable() -> Path:
    return VENV / "bin" / NAME


def ensure_installed() -> Path:
    """The router's executable, installing it into VENV first when missing."""
    binary = executable()
    if binary.exists():
        return binary
    print(f"installing {PACKAGE} into {VENV} (once)", file=sys.stderr, flush=True)
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        [str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", PACKAGE],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PeerUnavailable(f"`{' '.join(step)}` failed: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise PeerUnavailable(f"`{' '.join(step)}` exited with {done.returncode}: {' / '.join(tail)}")
    if not binary.exists():
        raise PeerUnavailable(f"{PACKAGE} installed no {binary}")
    return binary


def launch_argv(binary: Path, port: int, worker_url: str, prometheus_port: int) -> list[str]:
    return [
        str(binary), "launch",
        "--host", "127.0.0.1", "--port", str(port),
        "--worker-urls", worker_url,
        "--policy", "round_robin",
        "--log-level", "warn",
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(prometheus_port),
    ]  # fmt: skip
