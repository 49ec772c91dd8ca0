"""Apply sql/migrations/NNNN_name.sql in order, each in one transaction, recorded in schema_migrations.

A session-level advisory lock serialises concurrent runners (several gateways starting at once): the
second waits, then finds nothing left to apply. An applied migration whose file changed is an error,
not something to silently re-run.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import aiopg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Arbitrary but fixed: the advisory lock key every runner of this project takes.
_LOCK_KEY = 0x1A7E_5717

log = logging.getLogger(__name__)


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"migration file name must look like 0001_name.sql: {path.name}")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return found


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""


async def migrate(pool: aiopg.Pool, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply what is pending; return the migrations applied by this call."""
    migrations = discover(directory)
    applied: list[Migration] = []
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            await cur.execute(_CREATE_TABLE)
            await cur.execute("SELECT version, checksum FROM schema_migrations")
            done = dict(await cur.fetchall())
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed after it was applied"
                        )
                    continue
                await _apply(cur, migration)
                applied.append(migration)
        finally:
            await cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied


async def _apply(cur: aiopg.Cursor, migration: Migration) -> None:
    log.info("applying migration", extra={"version": migration.version, "migration": migration.name})
    await cur.execute("BEGIN")
    try:
        await cur.execute(migration.sql)
        await cur.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
            (migration.version, migration.name, migration.checksum),
        )
    except BaseException:
        await cur.execute("ROLLBACK")
        raise
    await cur.execute("COMMIT")


async def require_current(pool: aiopg.Pool, directory: Path = MIGRATIONS_DIR) -> None:
    """Raise MigrationError naming what to run when the schema lags behind the code."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        row = await cur.fetchone()
        done: set[int] = set()
        if row and row[0]:
            await cur.execute("SELECT version FROM schema_migrations")
            done = {version for (version,) in await cur.fetchall()}
    missing = [m for m in discover(directory) if m.version not in done]
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise MigrationError(f"the database lacks {len(missing)} migration(s) ({names}): run `inventiv migrate`")
