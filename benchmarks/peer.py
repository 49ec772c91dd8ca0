"""The peers the gateway is measured against: Rust routers, each from a venv of its own outside the repo,
and nginx as a plain reverse proxy (benchmarks/nginx_proxy.py), the system's own, the floor of proxy cost.

Run as the peer harness the issue cites (bench-peers) runs them: round robin over one worker, Prometheus
on loopback, and each at a log level that writes nothing per request, as nginx runs with `access_log
off`. sglang-router writes two lines per request at its default level, so it runs at warn; vllm-router
writes none at its default (info) and keeps it. sglang-router probes the worker's /server_info and
/model_info at start; the mock worker lacks them, which it only warns about. vllm-router probes /health.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import static_upstream

_INSTALL_TIMEOUT_S = 600


class PeerUnavailable(RuntimeError):
    """A peer could not be installed, or is missing from the system; the benchmark runs without it and says why."""


@dataclass(frozen=True)
class Peer:
    name: str
    package: str
    # Between the executable and the shared flags: sglang-router's CLI takes a `launch` subcommand.
    subcommand: tuple[str, ...] = ()
    # After the shared flags.
    extra: tuple[str, ...] = ()
    # A Debian package found on the system (nginx), never pip-installed; it runs from a config file,
    # not from launch_argv.
    system: bool = False

    @property
    def venv(self) -> Path:
        # A venv of its own: its dependencies never meet the project's nor the other peer's.
        return Path(tempfile.gettempdir()) / f"inventiv-bench-{self.name}"

    def executable(self) -> Path:
        return self.venv / "bin" / self.name

    def launch_argv(self, binary: Path, port: int, worker_url: str, prometheus_port: int) -> list[str]:
        return [
            str(binary), *self.subcommand,
            "--host", "127.0.0.1", "--port", str(port),
            "--worker-urls", worker_url,
            "--policy", "round_robin",
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(prometheus_port),
            *self.extra,
        ]  # fmt: skip


SGLANG_ROUTER = Peer("sglang-router", "sglang-router", subcommand=("launch",), extra=("--log-level", "warn"))
# Its default policy is cache_aware; round_robin is what every peer runs.
VLLM_ROUTER = Peer("vllm-router", "vllm-router")
NGINX_PROXY = Peer("nginx", "nginx", system=True)
PEERS = {peer.name: peer for peer in (SGLANG_ROUTER, VLLM_ROUTER, NGINX_PROXY)}


def chosen(names: str) -> list[Peer]:
    """The peers of a comma-separated `--peers` value, in PEERS order; an unknown name is an error."""
    wanted = {name.strip() for name in names.split(",") if name.strip()}
    unknown = wanted - PEERS.keys()
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(sorted(unknown))}; known: {', '.join(PEERS)}")
    return [peer for name, peer in PEERS.items() if name in wanted]


def install_steps(peer: Peer, python: str = sys.executable) -> list[list[str]]:
    return [
        [python, "-m", "venv", str(peer.venv)],
        [str(peer.venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", peer.package],
    ]


def ensure_installed(peer: Peer) -> Path:
    """The peer's executable, installing it into its venv first when missing."""
    if peer.system:
        found = static_upstream.find_nginx()
        if found is None:
            raise PeerUnavailable(static_upstream.NGINX_MISSING)
        return found
    binary = peer.executable()
    if binary.exists():
        return binary
    print(f"installing {peer.package} into {peer.venv} (once)", file=sys.stderr, flush=True)
    for step in install_steps(peer):
        _run_step(step)
    if not binary.exists():
        raise PeerUnavailable(f"{peer.package} installed no {binary}")
    return binary


def available(names: str) -> dict[Peer, Path]:
    """The executables of the peers named in a `--peers` value, installing them when missing; a peer that
    cannot be had is left out, saying why on stderr. An unknown name exits with the list of known ones."""
    try:
        wanted = chosen(names)
    except ValueError as exc:
        raise SystemExit(f"--peers: {exc}") from None
    binaries = {}
    for each in wanted:
        try:
            binaries[each] = ensure_installed(each)
        except PeerUnavailable as exc:
            reason = str(exc) if each.system else f"it could not be installed: {exc}"
            print(f"{each.name}: skipped, {reason}", file=sys.stderr)
    return binaries


def _run_step(step: Sequence[str]) -> None:
    try:
        done = subprocess.run(step, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"`{' '.join(step)}` failed: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise PeerUnavailable(f"`{' '.join(step)}` exited with {done.returncode}: {' / '.join(tail)}")
