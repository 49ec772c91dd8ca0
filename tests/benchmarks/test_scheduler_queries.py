"""benchmarks/scheduler_queries.py at a small size, on the test database: every statement is named."""

from __future__ import annotations

from typing import Any

import aiopg

from benchmarks.scheduler_queries import render, run_queries
from inventiv.settings import Settings


async def test_a_few_lifecycles_name_their_statements_per_phase(
    db_pool: aiopg.Pool, redis: Any, settings: Settings
) -> None:
    provision, release = await run_queries(settings, db_pool, redis, instances=3)

    assert provision.queries["instances.mark_instance_ready"] == 1.0
    assert provision.queries["instances.record_instance_server"] == 1.0
    assert release.queries["instances.finish_instance_release"] == 1.0
    assert "instances.mark_instance_ready" not in release.queries
    assert all("." in q for q in provision.queries), "every statement is one of sql/queries"
    assert abs(sum(provision.queries.values()) - provision.statements_per_instance) < 0.1
    assert provision.cloud_calls["POST /instance/v1/zones/{zone}/servers"] == 1.0
    # A release terminates the server and deletes its two volumes (a call lost to a slow machine is retried).
    assert release.cloud_calls["POST /instance/v1/zones/{zone}/servers/{id}/action"] >= 1.0
    assert release.cloud_calls["DELETE /block/v1/zones/{zone}/volumes/{id}"] >= 2.0
    assert render(3, [provision, release]).splitlines()[0] == "3 instances, fake Scaleway, driver in process"
