"""Scale run of the scheduler: N instances created and released through the fake Scaleway, figures per run.

    python -m benchmarks.scheduler_bench [--sizes 50,200,500] [--faulty 50] [--boot-s 20] [--json PATH]

Each run gets its own database, Redis prefix and fake Scaleway API (the recorded bodies, served in this
process), and a real `inventiv scheduler` process at its default settings, pointed at the fake. N rows are
inserted as POST /deployments inserts them (L40S in fr-par-2, a 7B model, so each has a boot image to
resolve and a data volume), each with its PROVISION command; once all are ready, each is asked to
terminate as DELETE does. Servers take `--boot-s` seconds to run once powered on (a real GPU server takes
minutes), and every worker answers health checks at once (one mock worker stands for all of them).

Reported per run: wall time to all ready and to all released; time to ready per instance; how late a
running worker was noticed (ready_at minus when its server was due to run); cloud calls per instance by
route and phase; scheduler CPU; database transactions per instance; duplicates (an instance that got more
than one server or data volume); leftovers (servers and volumes still in the fake at the end).
`--faulty N` adds a run where 20 % of cloud calls fail with a 500 (half before the change, half after it:
lost replies).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiopg
import redis.asyncio as aioredis
import uvloop

from benchmarks.processes import Started, stop
from benchmarks.procfs import tree_cpu_seconds
from benchmarks.services import BenchServices, bench_services
from benchmarks.stats import median, percentile
from gateway.control import notify
from inventiv.redis_keys import SchedulerCommand
from inventiv.settings import Settings
from sql.migrate import migrate
from sql.pool import create_pool
from sql.seed import seed_demo_catalog

# The fake Scaleway and the in-process mock worker live with the tests (their stand-ins for the cloud and
# a worker); the fake imports its recorded bodies as a top-level module, as the tests do.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))
from fake_scaleway import FakeScaleway, run_fake_scaleway
from memory_provider import serve_worker

ZONE = "fr-par-2"
TYPE = "L40S-1-48G"
MODEL = "Qwen/Qwen2.5-7B-Instruct"
# A run that has not converged by then has a bug worth reporting, not waiting for.
_PHASE_TIMEOUT_S = 900.0
_POLL_S = 0.5
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

INSERT = """
INSERT INTO instances (provider_id, zone_id, instance_type_id, model_id, organization_id, status, worker_port,
                       provisioning_deadline_at)
SELECT p.id, z.id, t.id, (SELECT id FROM models WHERE hf_repo_id = %(model)s),
       (SELECT id FROM organizations WHERE slug = 'demo'), 'provisioning', t.worker_port,
       now() + interval '1 hour'
FROM providers p JOIN zones z ON z.provider_id = p.id JOIN instance_types t ON t.provider_id = p.id
WHERE p.code = 'scaleway' AND z.code = %(zone)s AND t.code = %(type)s
RETURNING id
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    instances: int
    error_rate: float = 0.0


@dataclass
class RunFigures:
    scenario: Scenario
    ready_s: float = 0.0
    released_s: float = 0.0
    failed: int = 0
    not_final: int = 0
    # error_code -> instances that ended with it (a fault-free run should have none).
    errors: dict[str, int] = field(default_factory=dict)
    time_to_ready_s: dict[str, float] = field(default_factory=dict)
    notice_delay_s: dict[str, float] = field(default_factory=dict)
    calls_per_instance: dict[str, dict[str, float]] = field(default_factory=dict)
    scheduler_cpu_s: float = 0.0
    db_transactions_per_instance: float = 0.0
    duplicate_servers: int = 0
    duplicate_data_volumes: int = 0
    leftover_servers: int = 0
    leftover_volumes: int = 0
    injected_errors: int = 0


def route(method: str, path: str) -> str:
    """`GET /instance/v1/zones/{zone}/servers/{id}` for any zone and id: calls grouped by what they do."""
    shape = _UUID.sub("{id}", path).replace(f"/zones/{ZONE}/", "/zones/{zone}/")
    return f"{method} {shape}"


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, p95 and max, rounded to 0.01 (p95 interpolated as the other benchmarks' percentiles)."""
    mid, p95 = median(values), percentile(values, 95)
    if mid is None or p95 is None:
        return {}
    return {"median": round(mid, 2), "p95": round(p95, 2), "max": round(max(values), 2)}


def per_instance_calls(calls: Sequence[tuple[str, str]], instances: int) -> dict[str, float]:
    counted = Counter(route(method, path) for method, path in calls)
    table = {name: round(n / instances, 2) for name, n in counted.most_common()}
    table["total"] = round(len(calls) / instances, 2)
    return table


def duplicates(created: dict[str, tuple[str, ...]], instance_tags: set[str]) -> int:
    """Instances that got more than one of these resources (every server, or every Block volume created)."""
    per_instance = Counter(t for tags in created.values() for t in tags if t in instance_tags)
    return sum(1 for n in per_instance.values() if n > 1)


@asynccontextmanager
async def _scheduler(services: BenchServices, fake: FakeScaleway, log_path: Path) -> AsyncIterator[Started]:
    env = {
        **os.environ,
        **services.gateway_env(),
        "SCW_API_URL": fake.url,
        "SCW_SECRET_KEY": fake.secret_key,
        "SCW_DEFAULT_PROJECT_ID": fake.project_id,
        "INVENTIV_SCW_RETRY_BASE_S": "0.05",
        # Every worker is health-checked from this machine, as the fake gives them 127.0.0.1.
        "INVENTIV_SCW_WORKER_ALLOWED_CIDRS": "127.0.0.1/32",
        "INVENTIV_WORKER_SECRET_KEY": secrets.token_urlsafe(48),
        "INVENTIV_SCHEDULER_METRICS_PORT": "0",
        "INVENTIV_LOG_FORMAT": "json",
    }
    scheduler = await _start(env, log_path)
    try:
        yield scheduler
    finally:
        await stop(scheduler)


async def _start(env: dict[str, str], log_path: Path) -> Started:
    # Not benchmarks.processes.start: that one pins the process to one CPU (taskset), and this benchmark
    # measures the scheduler as it runs by default, on every CPU. Stopped by benchmarks.processes.stop.
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "inventiv", "scheduler",
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT, env=env,
        )  # fmt: skip
    return Started("scheduler", process, log_path)


async def _prepare(pool: aiopg.Pool, worker_port: int) -> None:
    await migrate(pool)
    await seed_demo_catalog(pool)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE instance_types SET worker_port = %s "
            "WHERE provider_id = (SELECT id FROM providers WHERE code = 'scaleway')",
            (worker_port,),
        )


async def _scalar(pool: aiopg.Pool, sql: str, *params: Any) -> Any:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(sql, params)
        row = await cur.fetchone()
    return row[0]


async def _transactions(pool: aiopg.Pool) -> int:
    # Stats reach pg_stat_database within a second or so; the phases are far longer than that.
    return int(await _scalar(pool, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))


async def _until(pool: aiopg.Pool, sql: str, expected: int, scheduler: Started) -> float:
    began = time.monotonic()
    while time.monotonic() - began < _PHASE_TIMEOUT_S:
        if int(await _scalar(pool, sql)) >= expected:
            return time.monotonic() - began
        if scheduler.process.returncode is not None:
            raise RuntimeError(
                f"the scheduler exited with status {scheduler.process.returncode}; its log ({scheduler.log_path}) "
                f"ends with:\n{scheduler.log_tail()}"
            )
        await asyncio.sleep(_POLL_S)
    raise TimeoutError(f"not converged after {_PHASE_TIMEOUT_S:.0f} s: {sql}")


async def _command_all(
    redis: aioredis.Redis, settings: Settings, command: SchedulerCommand, ids: Sequence[str]
) -> None:
    for instance_id in ids:
        await notify.send_scheduler_command(redis, settings, command, instance_id)


# Every instance has settled (ready, or failed for good) / been released and cleaned up.
_SETTLED = "SELECT count(*) FROM instances WHERE status IN ('ready', 'failed')"
_RELEASED = "SELECT count(*) FROM instances WHERE deleted_at IS NOT NULL"
_TERMINATE_READY = (
    "UPDATE instances SET status = 'terminating', terminating_at = now(), next_attempt_at = now() "
    "WHERE status = 'ready'"
)


async def insert_instances(pool: aiopg.Pool, statement: str, params: dict[str, str], n: int) -> list[str]:
    """n instance rows from `statement` (an INSERT ... RETURNING id), the scheduler not told yet."""
    ids = []
    async with pool.acquire() as conn, conn.cursor() as cur:
        for _ in range(n):
            await cur.execute(statement, params)
            ids.append(str((await cur.fetchone())[0]))
    return ids


async def provision_all(
    pool: aiopg.Pool, redis: aioredis.Redis, settings: Settings, ids: Sequence[str], scheduler: Started
) -> float:
    """Send PROVISION for each instance; seconds until every one is ready or failed."""
    await _command_all(redis, settings, SchedulerCommand.PROVISION, ids)
    return round(await _until(pool, _SETTLED, len(ids), scheduler), 1)


async def release_all(
    pool: aiopg.Pool, redis: aioredis.Redis, settings: Settings, ids: Sequence[str], scheduler: Started
) -> float:
    """Terminate every ready instance and send TERMINATE; seconds until every one is released."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(_TERMINATE_READY)
    await _command_all(redis, settings, SchedulerCommand.TERMINATE, ids)
    released_s = round(await _until(pool, _RELEASED, len(ids), scheduler), 1)
    await asyncio.sleep(2)  # let the statistics and the last passes settle
    return released_s


async def run_scenario(scenario: Scenario, boot_s: float, run_dir: Path) -> RunFigures:
    figures = RunFigures(scenario)
    half = scenario.error_rate / 2
    async with (
        bench_services(run_dir) as services,
        run_fake_scaleway(
            polls_to_running=10**9, seconds_to_running=boot_s, polls_to_gone=2, error_rate=half,
            error_after_rate=half, seed=1,
        ) as fake,
        serve_worker(MODEL) as (_, worker_port),
    ):  # fmt: skip
        pool = await create_pool(services.database_url, maxsize=2)
        redis = aioredis.Redis.from_url(services.redis_url)
        settings = Settings(redis_prefix=services.redis_prefix)
        try:
            await _prepare(pool, worker_port)
            async with _scheduler(services, fake, run_dir / f"scheduler-{scenario.name}.log") as scheduler:
                await _measure(scenario, figures, pool, redis, settings, fake, scheduler)
        finally:
            pool.close()
            await pool.wait_closed()
            await redis.aclose()
    return figures


async def _measure(
    scenario: Scenario, figures: RunFigures, pool: aiopg.Pool, redis: aioredis.Redis, settings: Settings,
    fake: FakeScaleway, scheduler: Started,
) -> None:  # fmt: skip
    n, pid = scenario.instances, scheduler.pid
    ids = await insert_instances(pool, INSERT, {"model": MODEL, "zone": ZONE, "type": TYPE}, n)
    cpu0, tx0, calls0 = tree_cpu_seconds(pid), await _transactions(pool), len(fake.requests)
    figures.ready_s = await provision_all(pool, redis, settings, ids, scheduler)
    calls1 = len(fake.requests)
    await _times(figures, pool, fake)
    figures.released_s = await release_all(pool, redis, settings, ids, scheduler)
    figures.scheduler_cpu_s = round(tree_cpu_seconds(pid) - cpu0, 2)
    figures.db_transactions_per_instance = round((await _transactions(pool) - tx0) / n, 1)
    figures.calls_per_instance = {
        "provision": per_instance_calls(fake.requests[calls0:calls1], n),
        "release": per_instance_calls(fake.requests[calls1:], n),
    }
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT error_code, count(*) FROM instances WHERE error_code IS NOT NULL GROUP BY 1")
        figures.errors = {code: int(n) for code, n in await cur.fetchall()}
    figures.failed = sum(figures.errors.values())
    figures.not_final = int(await _scalar(pool, "SELECT count(*) FROM instances WHERE status <> 'terminated'"))
    tags = {f"instance={i}" for i in ids}
    figures.duplicate_servers = duplicates(fake.created_servers, tags)
    figures.duplicate_data_volumes = duplicates(fake.created_volumes, tags)
    figures.leftover_servers, figures.leftover_volumes = len(fake.servers), len(fake.volumes)
    figures.injected_errors = fake.injected_errors


async def _times(figures: RunFigures, pool: aiopg.Pool, fake: FakeScaleway) -> None:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "SELECT provider_instance_id, extract(epoch FROM ready_at - created_at)::float8, "
            "extract(epoch FROM ready_at)::float8 FROM instances WHERE status = 'ready'"
        )
        rows = await cur.fetchall()
    figures.time_to_ready_s = spread([r[1] for r in rows])
    figures.notice_delay_s = spread([r[2] - fake.running_since[r[0]] for r in rows if r[0] in fake.running_since])


def render(runs: Sequence[RunFigures]) -> str:
    head = "| | " + " | ".join(f"{r.scenario.name}" for r in runs) + " |"
    lines = [head, "|---" * (len(runs) + 1) + "|"]

    def row(label: str, cell: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(str(cell(r)) for r in runs) + " |")

    row("instances", lambda r: r.scenario.instances)
    row("injected cloud errors", lambda r: r.injected_errors)
    row("all ready (s)", lambda r: r.ready_s)
    row("all released (s)", lambda r: r.released_s)
    row("time to ready, median / p95 / max (s)", lambda r: _triple(r.time_to_ready_s))
    row("ready noticed after the server ran, median / p95 / max (s)", lambda r: _triple(r.notice_delay_s))
    row("cloud calls per instance, provision", lambda r: r.calls_per_instance["provision"]["total"])
    row("cloud calls per instance, release", lambda r: r.calls_per_instance["release"]["total"])
    row("scheduler CPU per instance (ms)", lambda r: round(1000 * r.scheduler_cpu_s / r.scenario.instances, 1))
    row("database transactions per instance", lambda r: r.db_transactions_per_instance)
    row("instances with an error left / not terminated", lambda r: f"{r.failed} / {r.not_final}")
    row("errors left, by code", lambda r: ", ".join(f"{c} {n}" for c, n in sorted(r.errors.items())) or "-")
    row("duplicate servers / data volumes", lambda r: f"{r.duplicate_servers} / {r.duplicate_data_volumes}")
    row("leftover servers / volumes", lambda r: f"{r.leftover_servers} / {r.leftover_volumes}")
    return "\n".join(lines)


def _triple(values: dict[str, float]) -> str:
    return " / ".join(str(values.get(k, "-")) for k in ("median", "p95", "max"))


def _routes(runs: Sequence[RunFigures]) -> str:
    out = []
    for r in runs:
        for phase, table in r.calls_per_instance.items():
            calls = ", ".join(f"{name} {n}" for name, n in table.items() if name != "total")
            out.append(f"- {r.scenario.name}, {phase}: {calls}")
    return "\n".join(out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scheduler_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="50,200,500", help="instances per fault-free run, comma-separated")
    parser.add_argument("--faulty", type=int, default=50, help="instances of the run with 20%% faults (0: none)")
    parser.add_argument("--boot-s", type=float, default=20.0, help="seconds a server takes to run once powered on")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    scenarios = [Scenario(f"{n}", int(n)) for n in args.sizes.split(",") if n.strip()]
    if args.faulty:
        scenarios.append(Scenario(f"{args.faulty}, 20 % faults", args.faulty, error_rate=0.2))
    run_dir = Path(tempfile.mkdtemp(prefix="inventiv-scheduler-bench-"))
    began, load_before = time.monotonic(), os.getloadavg()
    runs = []
    for scenario in scenarios:
        print(f"== {scenario.name} ({time.monotonic() - began:.0f} s)", file=sys.stderr, flush=True)
        runs.append(uvloop.run(run_scenario(scenario, args.boot_s, run_dir)))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\n{stamp}, {time.monotonic() - began:.0f} s, load average {load_before[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after; servers run {args.boot_s:g} s after power-on; logs in {run_dir}\n"
    )
    print(render(runs))
    print("\nCloud calls per instance by route:\n" + _routes(runs))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
