"""`inventiv psql`: psql on the configured database, or on the embedded one, as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

from inventiv.command_error import CommandError
from inventiv.embedded import EmbeddedServices
from inventiv.psql import psql_args, psql_invocation, run_psql
from inventiv.settings import Settings


def _inventiv(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("INVENTIV_")}
    return subprocess.run([sys.executable, "-m", "inventiv", "--log-format", "json", *args],
                          env={**base, **env}, capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    ("url", "argv_url", "password"),
    [
        ("postgresql://u:s%40cret@db:5432/x?sslmode=require", "postgresql://u@db:5432/x?sslmode=require", "s@cret"),
        ("postgresql://postgres:@/inventiv?host=/run/pg", "postgresql://postgres@/inventiv?host=/run/pg", ""),
        ("postgresql://u@db/x", "postgresql://u@db/x", None),
        ("postgresql:///x?host=/run/pg", "postgresql:///x?host=/run/pg", None),
        ("postgresql://:pw@/x?host=/run/pg", "postgresql:///x?host=/run/pg", "pw"),
    ],
)
def test_the_password_never_reaches_the_command_line(url: str, argv_url: str, password: str | None) -> None:
    argv, env = psql_invocation("/usr/bin/psql", url, ["-At", "-c", "select 1"])
    assert argv == ["/usr/bin/psql", argv_url, "-At", "-c", "select 1"]
    assert env == ({} if password is None else {"PGPASSWORD": password})


@pytest.mark.parametrize(
    ("given", "passed"),
    [(["--", "-At", "-c", "x"], ["-At", "-c", "x"]), ([], []), (["db", "--", "x"], ["db", "--", "x"])],
)
def test_the_separator_is_dropped(given: list[str], passed: list[str]) -> None:
    assert psql_args(given) == passed


needs_psql = pytest.mark.skipif(subprocess.run(["which", "psql"], capture_output=True).returncode != 0,
                                reason="psql is not installed (postgresql-client)")  # fmt: skip


@needs_psql
def test_psql_on_the_configured_database(database_url: str) -> None:
    result = _inventiv("psql", "--", "-At", "-c", "select current_database(), 1",
                       env={"INVENTIV_DATABASE_URL": database_url})  # fmt: skip
    assert result.returncode == 0, result.stderr
    # The database's name is the URL's path; the embedded one's URL names its socket folder in the query.
    assert result.stdout.strip() == f"{urlsplit(database_url).path.lstrip('/')}|1"


@needs_psql
def test_psql_exit_status_is_psql_s(database_url: str) -> None:
    result = _inventiv("psql", "--", "-c", "select nonsense", env={"INVENTIV_DATABASE_URL": database_url})
    assert result.returncode == 1 and "nonsense" in result.stderr


def test_without_psql_on_the_path_the_embedded_wheels_own_is_used(database_url: str, tmp_path: Path) -> None:
    result = _inventiv("psql", "--", "-At", "-c", "select 1", env={"INVENTIV_DATABASE_URL": database_url,
                                                                   "PATH": str(tmp_path)})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def test_without_any_psql_one_clear_error(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setattr("inventiv.psql.find_psql", lambda: None)
    with pytest.raises(CommandError, match="psql is not installed"):
        run_psql(Settings(database_url=database_url), ["--", "-c", "select 1"])


@needs_psql
def test_psql_on_the_embedded_database_started_for_it_then_stopped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = _inventiv("psql", "--", "-At", "-c", "select current_database()", env={"INVENTIV_DATA_DIR": str(data)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "inventiv"
    assert not (data / "postgres" / "postmaster.pid").exists(), "the server it started is stopped"


@needs_psql
def test_psql_on_the_embedded_database_a_running_command_started(tmp_path: Path) -> None:
    data = tmp_path / "data"
    running = EmbeddedServices(data).start(redis=False)  # as `inventiv up` would
    try:
        assert running.database_url
        result = _inventiv("psql", "--", "-At", "-c", "select current_database()", env={"INVENTIV_DATA_DIR": str(data)})
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "inventiv"
        conn = psycopg2.connect(running.database_url)  # still running: it was not psql's to stop
        conn.close()
    finally:
        running.stop()
