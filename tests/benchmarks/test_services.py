from __future__ import annotations

from pathlib import Path

import psycopg2

from benchmarks.services import bench_services, prepare_database
from sql.databases import with_database


async def test_an_extra_model_gets_its_catalog_entry_and_its_worker(
    database_url: str, redis_server_url: str, tmp_path: Path
) -> None:
    env = {"INVENTIV_DATABASE_URL": with_database(database_url, "postgres"), "INVENTIV_REDIS_URL": redis_server_url}
    async with bench_services(tmp_path, env) as services:
        _, [instance_id] = await prepare_database(
            services.database_url, {"bench/static": ("127.0.0.1", 18001)}, extra_models=["bench/static"]
        )
        with psycopg2.connect(services.database_url) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT m.hf_repo_id, i.worker_port FROM instances i JOIN models m ON m.id = i.model_id"
                " WHERE i.id = %s",
                (instance_id,),
            )
            assert cur.fetchone() == ("bench/static", 18001)
        conn.close()
