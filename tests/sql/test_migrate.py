import asyncio
from pathlib import Path

import aiopg
import pytest

from sql.migrate import MigrationError, discover, migrate


async def test_migrate_again_applies_nothing(db_pool: aiopg.Pool) -> None:
    assert await migrate(db_pool) == []


async def test_every_migration_is_recorded_with_its_checksum(db_pool: aiopg.Pool) -> None:
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT version, checksum FROM schema_migrations ORDER BY version")
        recorded = await cur.fetchall()
    assert recorded == [(m.version, m.checksum) for m in discover()]


async def test_concurrent_runners_apply_each_migration_once(db_pool: aiopg.Pool, tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text(
        "CREATE TABLE migrate_probe_{0} (id int); INSERT INTO migrate_probe_{0} VALUES (1);".format(
            tmp_path.name.replace("-", "_")
        )
    )
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("CREATE SCHEMA probe")
        await cur.execute("SET search_path TO probe")
    try:
        results = await asyncio.gather(*(_migrate_in_schema(db_pool, tmp_path) for _ in range(4)))
        assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    finally:
        async with db_pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("DROP SCHEMA probe CASCADE")


async def _migrate_in_schema(pool: aiopg.Pool, directory: Path) -> list[object]:
    # Each runner uses its own pool so the advisory lock is really contended across sessions.
    dsn = pool._dsn  # the same server and database as the fixture's pool
    separate = await aiopg.create_pool(dsn, minsize=1, maxsize=1, options="-c search_path=probe")
    try:
        return list(await migrate(separate, directory))
    finally:
        separate.close()
        await separate.wait_closed()


async def test_a_changed_applied_migration_is_an_error(db_pool: aiopg.Pool, tmp_path: Path) -> None:
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
    try:
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(db_pool)
    finally:
        async with db_pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "UPDATE schema_migrations SET checksum = %s WHERE version = 1", (discover()[0].checksum,)
            )


def test_badly_named_migration_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_init.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match=r"0001_name\.sql"):
        discover(tmp_path)


async def test_require_current_names_what_is_missing(db_pool: aiopg.Pool, tmp_path: Path) -> None:
    from sql.migrate import require_current

    await require_current(db_pool)  # the session database is fully migrated
    (tmp_path / "9999_later.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"9999_later.*inventiv migrate"):
        await require_current(db_pool, tmp_path)
