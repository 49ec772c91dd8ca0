"""The benchmark's own Postgres database and Redis key prefix, and the rows it needs in them.

Postgres: a throwaway `inventiv_bench_<random>` database on the server of INVENTIV_DATABASE_URL, or
else on the local default server, or else on an embedded one started for the run; dropped at the end.
Redis: INVENTIV_REDIS_URL, or the local default, or an embedded one; every key under a prefix of the
run's own, deleted at the end.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiopg
import psycopg2
import redis
import redis.asyncio as aioredis

from inventiv.embedded import EmbeddedServices
from inventiv.redis_keys import delete_prefix
from sql.api_key_store import create_api_key
from sql.databases import create_database, drop_database, with_database
from sql.migrate import migrate
from sql.pool import create_pool, redact
from sql.queries import queries
from sql.seed import DEMO_ORG, seed_demo_catalog

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# How long to try a default local server before falling back to the embedded one.
_PROBE_TIMEOUT_S = 2

_INSERT_INSTANCE = """
INSERT INTO instances (provider_id, zone_id, instance_type_id, model_id, status, ip_address, worker_port,
                       worker_status, worker_queue_depth, worker_last_heartbeat_at, ready_at)
SELECT p.id, z.id, t.id, m.id, 'ready', %(host)s, %(port)s, 'ready', 0, now(), now()
FROM providers p
JOIN zones z ON z.provider_id = p.id AND z.code = 'local-1'
JOIN instance_types t ON t.provider_id = p.id AND t.code = 'MOCK-GPU-S'
JOIN models m ON m.hf_repo_id = %(model)s
WHERE p.code = 'mock'
RETURNING id
"""


@dataclass(frozen=True)
class BenchServices:
    database_url: str
    redis_url: str
    redis_prefix: str

    def gateway_env(self) -> dict[str, str]:
        return {
            "INVENTIV_DATABASE_URL": self.database_url,
            "INVENTIV_REDIS_URL": self.redis_url,
            "INVENTIV_REDIS_PREFIX": self.redis_prefix,
        }


@asynccontextmanager
async def bench_services(data_dir: Path, env: Mapping[str, str] | None = None) -> AsyncIterator[BenchServices]:
    """A migrated, seeded throwaway database and a fresh Redis prefix, removed on exit."""
    env = os.environ if env is None else env
    server = env.get("INVENTIV_DATABASE_URL") or _reachable_postgres(DEFAULT_DATABASE_URL)
    redis_url = env.get("INVENTIV_REDIS_URL") or _reachable_redis(DEFAULT_REDIS_URL)
    embedded = None
    if server is None or redis_url is None:
        log.warning("no local Postgres/Redis answered; starting the embedded services under %s", data_dir)
        embedded = EmbeddedServices(data_dir / "embedded").start(postgres=server is None, redis=redis_url is None)
        server = server or embedded.database_url
        redis_url = redis_url or embedded.redis_url
    assert server is not None and redis_url is not None
    run_id = uuid.uuid4().hex[:12]
    name = f"inventiv_bench_{run_id}"
    services = BenchServices(with_database(server, name), redis_url, f"inventiv-bench:{run_id}:")
    try:
        try:
            create_database(server, name)
        except psycopg2.OperationalError as exc:
            raise RuntimeError(f"cannot reach Postgres at {redact(server)}: {exc}") from None
        try:
            yield services
        finally:
            drop_database(server, name)
            await _delete_prefix(redis_url, services.redis_prefix)
    finally:
        if embedded is not None:
            embedded.stop()


async def prepare_database(database_url: str, workers: Mapping[str, tuple[str, int]],
                           extra_models: Sequence[str] = ()) -> tuple[str, list[str]]:  # fmt: skip
    """Migrate, seed, add `extra_models` (repo ids) to the catalog, one ready instance per (model ->
    (host, port)) and an inference key.

    Returns the key and the instance ids.
    """
    pool = await create_pool(database_url, maxsize=2)
    try:
        await migrate(pool)
        await seed_demo_catalog(pool)
        async with pool.acquire() as conn:
            for model in extra_models:
                await queries.catalog.insert_catalog_model(conn, name=model, hf_repo_id=model, is_active=True,
                                                           parameter_count=None, context_length=None,
                                                           data_volume_gb=None)  # fmt: skip
        instance_ids = [await _insert_instance(pool, model, host, port) for model, (host, port) in workers.items()]
        async with pool.acquire() as conn:
            org = await queries.organizations.get_organization_by_slug(conn, slug=DEMO_ORG)
            created = await create_api_key(conn, org["id"], "benchmark", ["inference"])
    finally:
        pool.close()
        await pool.wait_closed()
    return created.key, instance_ids


async def _insert_instance(pool: aiopg.Pool, model: str, host: str, port: int) -> str:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(_INSERT_INSTANCE, {"host": host, "port": port, "model": model})
        row = await cur.fetchone()
    if row is None:
        raise RuntimeError(f"model {model!r} is not in the seeded catalog")
    return str(row[0])


def _reachable_postgres(url: str) -> str | None:
    try:
        psycopg2.connect(url, connect_timeout=_PROBE_TIMEOUT_S).close()
    except psycopg2.OperationalError:
        return None
    return url


def _reachable_redis(url: str) -> str | None:
    client = redis.Redis.from_url(url, socket_connect_timeout=_PROBE_TIMEOUT_S)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    return url


async def _delete_prefix(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await delete_prefix(client, prefix)
    finally:
        await client.aclose()
