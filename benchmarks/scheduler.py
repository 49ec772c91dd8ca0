"""The scheduler's benchmarks, one entry:

    python -m benchmarks.scheduler --chaos 50 [--seed 0] [--json PATH]
    python -m benchmarks.scheduler --passes 10000 [--orphans 100]
    python -m benchmarks.scheduler --mock 50
    python -m benchmarks.scheduler --queries 200
    python -m benchmarks.scheduler [scale options: see benchmarks/scheduler_bench.py]

`--chaos N`: N lifecycles (create, then terminate) on the fake Scaleway with 20 % of calls failing and a
fifth answered slowly, while a real `inventiv scheduler` process is killed with SIGKILL at random moments
and restarted (tests/support/scheduler_chaos.py; tests/scheduler/test_chaos.py runs 10). Prints the wall
time until every instance is final and nothing of ours is left in the fake, the kills, and what was left
or duplicated (both must be 0). `--passes N`: one reconciliation and one orphan sweep over N tracked
volumes (benchmarks/scheduler_passes.py). `--mock N`: N instances created and released on the mock cloud
(benchmarks/scheduler_mock.py). `--queries N`: statements per instance by named query, and cloud calls
by route, for N instances provisioned and released by the driver in process (benchmarks/scheduler_queries.py).
Without any of these, the scale runs of benchmarks/scheduler_bench.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path

import aiopg
import redis.asyncio as aioredis
import uvloop

from benchmarks import scheduler_bench, scheduler_mock, scheduler_passes, scheduler_queries
from benchmarks.services import bench_services
from inventiv.settings import Settings
from sql.migrate import migrate
from sql.pool import create_pool
from sql.seed import seed_demo_catalog

# The fake and the chaos run live with the tests (scheduler_bench put tests/support on sys.path).
from scheduler_chaos import ChaosFigures, run_chaos  # isort: skip

# A chaos run that has not converged by then has a bug worth reporting, not waiting for.
_CHAOS_TIMEOUT_S = 900.0


async def chaos(lifecycles: int, seed: int, run_dir: Path) -> ChaosFigures:
    async with bench_services(run_dir) as services:
        pool = await create_pool(services.database_url, maxsize=2)
        try:
            await migrate(pool)
            await seed_demo_catalog(pool)
            return await run_chaos(pool, services.gateway_env(), lifecycles, run_dir, seed=seed,
                                   timeout_s=_CHAOS_TIMEOUT_S)  # fmt: skip
        finally:
            pool.close()
            await pool.wait_closed()


@asynccontextmanager
async def _catalog(run_dir: Path) -> AsyncIterator[tuple[Settings, aiopg.Pool, aioredis.Redis]]:
    """Fresh services with the demo catalog: the settings, a pool and a Redis client on them."""
    async with bench_services(run_dir) as services:
        pool = await create_pool(services.database_url, maxsize=10)
        redis = aioredis.Redis.from_url(services.redis_url)
        try:
            await migrate(pool)
            await seed_demo_catalog(pool)
            settings = Settings(database_url=services.database_url, redis_url=services.redis_url,
                                redis_prefix=services.redis_prefix, data_dir=str(run_dir / "data"))  # fmt: skip
            yield settings, pool, redis
        finally:
            pool.close()
            await pool.wait_closed()
            await redis.aclose()


async def queries(instances: int, run_dir: Path) -> list[scheduler_queries.PhaseFigures]:
    async with _catalog(run_dir) as (settings, pool, redis):
        return await scheduler_queries.run_queries(settings, pool, redis, instances)


async def passes(volumes: int, orphans: int, run_dir: Path) -> list[scheduler_passes.PassFigures]:
    async with _catalog(run_dir) as (settings, pool, redis):
        return await scheduler_passes.run_passes(settings, pool, redis, volumes, orphans)


def render(figures: ChaosFigures) -> str:
    left = ", ".join(f"{name} {n}" for name, n in figures.left.items())
    return "\n".join([
        f"lifecycles: {figures.lifecycles}, SIGKILLs: {figures.kills}",
        f"cloud calls failed (injected): {figures.injected_errors}, answered slowly: {figures.slowed_calls}",
        f"wall time to converge: {figures.converge_s} s",
        f"instances by status: {figures.statuses}; not final: {figures.not_final}",
        f"errors left on instances: {figures.errors or '-'}",
        f"duplicate servers / data volumes: {figures.duplicate_servers} / {figures.duplicate_volumes}",
        f"left in the cloud: {left}",
    ])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scheduler", add_help=False)
    parser.add_argument("--chaos", type=int, help="lifecycles of the chaos run (random SIGKILLs, 20%% faults)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the faults, kills and terminations")
    parser.add_argument("--json", type=Path, help="also write the chaos figures as JSON to this file")
    parser.add_argument("--passes", type=int, help="tracked volumes of the reconciliation and sweep passes")
    parser.add_argument("--orphans", type=int, help="untracked tagged volumes of that run (default: 1 %% of it)")
    parser.add_argument("--mock", type=int, help="instances created and released on the mock cloud")
    parser.add_argument("--queries", type=int, help="instances whose statements are counted by named query")
    args, rest = parser.parse_known_args(argv)
    if args.queries is not None:
        run_dir = Path(tempfile.mkdtemp(prefix="inventiv-scheduler-queries-"))
        print(scheduler_queries.render(args.queries, uvloop.run(queries(args.queries, run_dir))))
        return 0
    if args.mock is not None:
        run_dir = Path(tempfile.mkdtemp(prefix="inventiv-scheduler-mock-"))
        print(scheduler_mock.render(uvloop.run(scheduler_mock.run_mock(args.mock, run_dir))))
        return 0
    if args.passes is not None:
        orphans = args.passes // 100 if args.orphans is None else args.orphans
        run_dir = Path(tempfile.mkdtemp(prefix="inventiv-scheduler-passes-"))
        print(scheduler_passes.render(args.passes, uvloop.run(passes(args.passes, orphans, run_dir))))
        return 0
    if args.chaos is None:
        return scheduler_bench.main([*rest, *(["--json", str(args.json)] if args.json else [])])
    run_dir = Path(tempfile.mkdtemp(prefix="inventiv-scheduler-chaos-"))
    figures = uvloop.run(chaos(args.chaos, args.seed, run_dir))
    print(render(figures))
    print(f"scheduler log: {run_dir / 'scheduler.log'}")
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(figures), indent=1))
    broken = figures.not_final or figures.duplicate_servers or figures.duplicate_volumes or any(figures.left.values())
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
