"""The scheduler killed with SIGKILL at random moments while it creates and releases instances on the fake
Scaleway (20 % of calls failing, some answered slowly), then left to converge.

`run_chaos` inserts N instances as POST /deployments does, runs a real `python -m inventiv scheduler`
process on them, terminates each (some while still provisioning, the rest once ready), and kills and
restarts that process at random moments until every instance has reached a final state. It then waits
for the fake to hold nothing of ours (servers, volumes, security groups, IPs) and reports what was left
and how long it took. The test (tests/scheduler/test_chaos.py) and `python -m benchmarks.scheduler --chaos
N` both run it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiopg
from fake_scaleway import FakeScaleway, run_fake_scaleway
from memory_provider import serve_worker

from benchmarks.scheduler_bench import INSERT, duplicates

ZONE = "fr-par-2"
TYPE = "L40S-1-48G"
MODEL = "Qwen/Qwen2.5-7B-Instruct"
# Half the injected faults fail a call before it does anything, half after (a lost reply): 20 % in all.
ERROR_RATE = 0.2
# A fifth of the calls are answered after a pause of up to this long, so that many kills land while a
# call is in flight (its change made or not, its reply lost either way).
SLOW_RATE, SLOW_S = 0.2, 0.3
# Servers run this long after power-on: short, so a run is about the scheduler, not the wait.
BOOT_S = 0.3
# Kills come at a random moment within this many seconds of the scheduler running its jobs: a few steps,
# or none, so that most lifecycles see one at a different step.
KILL_WITHIN_S = (0.2, 2.0)
# This fraction of the instances is terminated while booting; the others once ready.
EARLY_TERMINATION = 0.3
_POLL_S = 0.1

TERMINATE = (
    "UPDATE instances SET status = 'terminating', terminating_at = now(), next_attempt_at = now() "
    "WHERE id = ANY(%s::uuid[]) AND status IN ('provisioning', 'booting', 'ready')"
)
FINAL = "status = 'terminated' OR (status = 'failed' AND deleted_at IS NOT NULL)"


@dataclass
class ChaosFigures:
    lifecycles: int
    kills: int = 0
    # From the first instance inserted to every instance final and the fake holding nothing of ours.
    converge_s: float = 0.0
    injected_errors: int = 0
    slowed_calls: int = 0
    # Instances that ever got more than one server (or Block volume created for their data).
    duplicate_servers: int = 0
    duplicate_volumes: int = 0
    left: dict[str, int] = field(default_factory=dict)
    not_final: int = 0
    # status -> instances; error_code -> instances (a release never fails, provisioning may).
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


def leftovers(fake: FakeScaleway) -> dict[str, int]:
    return {
        "servers": len(fake.servers), "volumes": len(fake.volumes), "local_volumes": len(fake.local_volumes),
        "security_groups": len(fake.security_groups), "ips": len(fake.ipam_ips),
    }  # fmt: skip


def scheduler_env(fake: FakeScaleway, services: Mapping[str, str], data_dir: Path) -> dict[str, str]:
    """The scheduler process's settings: the test's services, the fake, and intervals a test can wait out."""
    return {
        **os.environ,
        **services,
        "INVENTIV_DATA_DIR": str(data_dir),
        "SCW_API_URL": fake.url,
        "SCW_SECRET_KEY": fake.secret_key,
        "SCW_DEFAULT_PROJECT_ID": fake.project_id,
        "INVENTIV_SCW_RETRY_BASE_S": "0.05",
        "INVENTIV_SCW_WORKER_ALLOWED_CIDRS": "127.0.0.1/32",
        "INVENTIV_WORKER_SECRET_KEY": "chaos-" + "k" * 40,
        "INVENTIV_SCHEDULER_METRICS_PORT": "0",
        "INVENTIV_LOG_FORMAT": "json",
        # A killed scheduler's claims run out within 2 s, and its successor elects itself on its first tick.
        "INVENTIV_SCHEDULER_LEASE_S": "2",
        "INVENTIV_SCHEDULER_TICK_S": "0.2",
        "INVENTIV_SCHEDULER_RETRY_BASE_S": "0.1",
        "INVENTIV_SCHEDULER_RETRY_MAX_S": "1",
        "INVENTIV_SCHEDULER_POLL_MAX_S": "0.5",
        "INVENTIV_HEALTH_INTERVAL_S": "0.5",
        "INVENTIV_RECONCILE_INTERVAL_S": "1",
        "INVENTIV_ORPHAN_SWEEP_INTERVAL_S": "1",
        "INVENTIV_ORPHAN_GRACE_S": "1",
    }


class SchedulerProcess:
    """`python -m inventiv scheduler`, started again after each kill; its output appended to one log."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.starts_before = 0

    async def start(self) -> None:
        self.starts_before = self.log_path.read_bytes().count(b"scheduler running") if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "inventiv", "scheduler",
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT, env=self.env,
            )  # fmt: skip

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM, as a service manager stops it; SIGKILL if it does not exit within its grace."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            await self.kill()

    def running(self) -> bool:
        """Whether this start got as far as running its jobs (its log says so)."""
        return self.log_path.read_bytes().count(b"scheduler running") > self.starts_before

    def exited(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


async def _rows(pool: aiopg.Pool, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(sql, params)
        return list(await cur.fetchall())


async def prepare(pool: aiopg.Pool, worker_port: int) -> None:
    """Every Scaleway type's worker answers on this machine's mock worker (the fake gives 127.0.0.1)."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE instance_types SET worker_port = %s "
            "WHERE provider_id = (SELECT id FROM providers WHERE code = 'scaleway')",
            (worker_port,),
        )


async def run_chaos(
    pool: aiopg.Pool, services: Mapping[str, str], lifecycles: int, run_dir: Path, *, seed: int = 0,
    timeout_s: float = 300.0, max_kills: int | None = None,
) -> ChaosFigures:  # fmt: skip
    """N lifecycles under random SIGKILLs; the figures once converged (TimeoutError if it never does)."""
    rng = random.Random(seed)
    figures = ChaosFigures(lifecycles)
    # One kill per lifecycle by default: each costs a lease (2 s) and a start, and a run must end.
    max_kills = lifecycles if max_kills is None else max_kills
    async with (
        run_fake_scaleway(
            polls_to_running=10**9, seconds_to_running=BOOT_S, polls_to_gone=1, error_rate=ERROR_RATE / 2,
            error_after_rate=ERROR_RATE / 2, slow_rate=SLOW_RATE, slow_s=SLOW_S, seed=seed,
        ) as fake,
        serve_worker(MODEL) as (_, worker_port),
    ):  # fmt: skip
        await prepare(pool, worker_port)
        scheduler = SchedulerProcess(scheduler_env(fake, services, run_dir / "data"), run_dir / "scheduler.log")
        try:
            await _run(pool, fake, scheduler, rng, figures, timeout_s, max_kills)
        finally:
            await scheduler.stop()
            figures.injected_errors, figures.slowed_calls = fake.injected_errors, fake.slowed
            figures.left = leftovers(fake)
    return figures


async def _run(
    pool: aiopg.Pool, fake: FakeScaleway, scheduler: SchedulerProcess, rng: random.Random, figures: ChaosFigures,
    timeout_s: float, max_kills: int,
) -> None:  # fmt: skip
    began = time.monotonic()
    wanted = {"model": MODEL, "zone": ZONE, "type": TYPE}
    ids = [str(row[0]) for _ in range(figures.lifecycles) for row in await _rows(pool, INSERT, wanted)]
    # Some are terminated as soon as their server boots (a DELETE during provisioning), the rest once ready.
    early = {i for i in ids if rng.random() < EARLY_TERMINATION}
    await scheduler.start()
    next_kill: float | None = None
    while True:
        if time.monotonic() - began > timeout_s:
            raise TimeoutError(f"not converged in {timeout_s:.0f} s: left {leftovers(fake)}; {await _stuck(pool)}")
        if scheduler.exited() is not None:
            raise RuntimeError(f"the scheduler exited on its own ({scheduler.exited()}):\n{scheduler.log_tail()}")
        await _terminate_due(pool, early)
        final = await _all_final(pool)
        if final and not any(leftovers(fake).values()):
            figures.converge_s = round(time.monotonic() - began, 1)
            break
        if next_kill is None and scheduler.running():
            # A kill at a random moment of this scheduler's life, once it runs (not while Python imports).
            next_kill = time.monotonic() + rng.uniform(*KILL_WITHIN_S)
        if not final and figures.kills < max_kills and next_kill is not None and time.monotonic() >= next_kill:
            await scheduler.kill()
            figures.kills += 1
            await scheduler.start()
            next_kill = None
        await asyncio.sleep(_POLL_S)
    await _figures(pool, fake, ids, figures)


async def _terminate_due(pool: aiopg.Pool, early: set[str]) -> None:
    rows = await _rows(pool, "SELECT id, status FROM instances WHERE status IN ('booting', 'ready')")
    due = [str(i) for i, status in rows if status == "ready" or str(i) in early]
    if due:
        await _rows(pool, TERMINATE + " RETURNING id", (due,))


async def _stuck(pool: aiopg.Pool) -> list[tuple[Any, ...]]:
    """What each instance that is not final shows: for a failing run's message."""
    return await _rows(
        pool,
        "SELECT i.id, i.status, i.attempts, i.error_code, i.provider_instance_id, "
        "(SELECT array_agg(action_type || ':' || status ORDER BY created_at) FROM "
        " (SELECT * FROM action_logs a WHERE a.instance_id = i.id ORDER BY created_at DESC LIMIT 6) last) "
        f"FROM instances i WHERE NOT ({FINAL})",
    )


async def _all_final(pool: aiopg.Pool) -> bool:
    (row,) = await _rows(pool, f"SELECT count(*) FILTER (WHERE NOT ({FINAL})) FROM instances")
    return int(row[0]) == 0


async def _state(pool: aiopg.Pool) -> dict[str, int]:
    return {str(s): int(n) for s, n in await _rows(pool, "SELECT status, count(*) FROM instances GROUP BY 1")}


async def _figures(pool: aiopg.Pool, fake: FakeScaleway, ids: list[str], figures: ChaosFigures) -> None:
    tags = {f"instance={i}" for i in ids}
    figures.duplicate_servers = duplicates(fake.created_servers, tags)
    figures.duplicate_volumes = duplicates(fake.created_volumes, tags)
    figures.statuses = await _state(pool)
    (row,) = await _rows(pool, f"SELECT count(*) FILTER (WHERE NOT ({FINAL})) FROM instances")
    figures.not_final = int(row[0])
    errors = await _rows(pool, "SELECT error_code, count(*) FROM instances WHERE error_code IS NOT NULL GROUP BY 1")
    figures.errors = {str(code): int(n) for code, n in errors}
