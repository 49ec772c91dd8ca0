"""Reconciliation and the orphan sweep over a large fleet: what one pass costs.

    python -m benchmarks.scheduler --passes 10000

N tracked volumes: N/2 ready instances on the in-memory cloud (tests/support/memory_provider.py), each
with a running server, its boot volume and its data volume, all tracked as the scheduler tracks them,
and `--orphans` (default 1 % of N) tagged volumes no instance owns. One reconciliation pass, then one
orphan sweep pass (dry run: the orphans are only recorded) run in this process on a fresh database.

Per pass: wall time; this process's CPU (getrusage) and the part of it spent inside the in-memory cloud,
which a real cloud spends on its own machines; database statements (every aiopg cursor execute, counted
in this process: aiosql's queries, BEGIN and COMMIT); cloud calls, by method.
"""

from __future__ import annotations

import resource
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aiopg
import redis.asyncio as aioredis

from inventiv.settings import Settings
from scheduler.reconcile import reconcile_volumes
from scheduler.runtime import ProviderSet, Runtime
from scheduler.sweep import sweep_orphans
from sql.queries import queries

# tests/support is on sys.path (benchmarks.scheduler_bench puts it there).
from memory_provider import MemoryProvider  # isort: skip

ZONE = "local-1"
TAG = "inventiv"
_SECRET_KEY = "passes-benchmark-" + "k" * 32


@dataclass
class PassFigures:
    name: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    # CPU spent inside the in-memory cloud's methods (the cloud's own work, not the scheduler's).
    cloud_cpu_s: float = 0.0
    db_statements: int = 0
    cloud_calls: dict[str, int] = field(default_factory=dict)
    result: int = 0


class TimedProvider(MemoryProvider):
    """The in-memory cloud, charging the CPU time of each call to `cpu_s`."""

    cpu_s = 0.0

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name.startswith("_") or not callable(attr) or name not in _TIMED:
            return attr

        async def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.process_time()
            try:
                return await attr(*args, **kwargs)
            finally:
                self.cpu_s += time.process_time() - began

        return timed


_TIMED = frozenset({"get_server", "list_servers", "get_volume", "list_volumes", "list_firewalls", "delete_volume",
                    "terminate_server", "list_server_volumes"})  # fmt: skip


def fleet_rows(provider: MemoryProvider, instances: int, orphans: int) -> list[tuple[str, str, str, str, str]]:
    """Servers and volumes in the cloud; returns (instance id, server id, boot volume id, data volume id,
    server name) per instance."""
    rows = []
    for _ in range(instances):
        instance_id = str(uuid.uuid4())
        tags = (TAG, f"instance={instance_id}")
        server = provider.add_server(ZONE, f"inventiv-{instance_id[:8]}", tags)
        boot = provider.add_volume(ZONE, f"{server.name}-boot", 20, tags, volume_type="sbs_volume")
        data = provider.add_volume(ZONE, f"{server.name}-data", 100, tags)
        boot.server_id, boot.slot = server.id, "0"
        data.server_id, data.slot = server.id, "1"
        rows.append((instance_id, server.id, boot.id, data.id, server.name))
    for n in range(orphans):
        provider.add_volume(ZONE, f"left-{n}", 1, (TAG, f"instance={uuid.uuid4()}"))
    return rows


async def insert_fleet(pool: aiopg.Pool, rows: list[tuple[str, str, str, str, str]]) -> None:
    ids, servers, boots, datas, names = (list(column) for column in zip(*rows, strict=True))
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            """
            INSERT INTO instances (id, provider_id, zone_id, instance_type_id, model_id, organization_id, status,
                                   worker_status, provider_instance_id, ip_address, worker_port, ready_at,
                                   create_requested_at, worker_last_heartbeat_at)
            SELECT f.id, p.id, z.id, t.id, (SELECT id FROM models ORDER BY hf_repo_id LIMIT 1),
                   (SELECT id FROM organizations WHERE slug = 'demo'), 'ready', 'ready', f.server, '127.0.0.1',
                   t.worker_port, now(), now(), now()
            FROM unnest(%(ids)s::uuid[], %(servers)s::text[]) AS f(id, server)
            CROSS JOIN providers p JOIN zones z ON z.provider_id = p.id AND z.code = %(zone)s
            JOIN instance_types t ON t.provider_id = p.id AND t.code = 'MOCK-GPU-S'
            WHERE p.code = 'mock'
            """,
            {"ids": ids, "servers": servers, "zone": ZONE},
        )
        await cur.execute(
            """
            INSERT INTO instance_volumes (instance_id, provider_volume_id, name, volume_type, size_bytes, slot,
                                          is_boot, delete_on_terminate, attached_at)
            SELECT f.id, f.boot, f.name || '-boot', 'sbs_volume', 20 * 10^9, '0', true, true, now()
            FROM unnest(%(ids)s::uuid[], %(boots)s::text[], %(names)s::text[]) AS f(id, boot, name)
            UNION ALL
            SELECT f.id, f.data, f.name || '-data', 'sbs_volume', 100 * 10^9, '1', false, true, now()
            FROM unnest(%(ids)s::uuid[], %(datas)s::text[], %(names)s::text[]) AS f(id, data, name)
            """,
            {"ids": ids, "boots": boots, "datas": datas, "names": names},
        )
        await cur.execute("ANALYZE instances; ANALYZE instance_volumes")


class StatementCounter:
    """Counts the statements this process sends: every aiopg cursor's execute (aiosql's included)."""

    def __init__(self) -> None:
        self.count = 0
        # The statements' text, counted: query_name() says which named query each is.
        self.texts: Counter[str] = Counter()
        self._execute = aiopg.Cursor.execute

    def __enter__(self) -> StatementCounter:
        original = self._execute

        async def execute(cursor: aiopg.Cursor, operation: str, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            self.texts[operation] += 1
            return await original(cursor, operation, *args, **kwargs)

        aiopg.Cursor.execute = execute  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        aiopg.Cursor.execute = self._execute  # type: ignore[method-assign]


def query_names() -> dict[str, str]:
    """The SQL text of every named query (sql/queries) -> its name, e.g. `instances.claim_due_instances`."""
    names = {}
    # aiosql also makes a `<name>_cursor` twin of each query, with the same text.
    for name in (n for n in queries.available_queries if not n.endswith("_cursor")):
        method: Any = queries
        for part in name.split("."):
            method = getattr(method, part)
        names[method.sql] = name
    return names


def query_name(text: str, names: dict[str, str]) -> str:
    """A statement's query name, or its first words (BEGIN, COMMIT, a benchmark's own SQL)."""
    return names.get(text) or " ".join(text.split()[:3])


async def measure(name: str, provider: TimedProvider, run: Callable[[], Awaitable[Any]]) -> PassFigures:
    figures = PassFigures(name)
    calls0, cloud0 = len(provider.calls), provider.cpu_s
    usage0, began = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    with StatementCounter() as statements:
        result = await run()
    figures.wall_s = round(time.monotonic() - began, 2)
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    figures.cpu_s = round(usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime, 2)
    figures.cloud_cpu_s = round(provider.cpu_s - cloud0, 2)
    figures.db_statements = statements.count
    figures.cloud_calls = dict(Counter(method for method, _ in provider.calls[calls0:]).most_common())
    figures.result = result if isinstance(result, int) else len(result)
    return figures


async def run_passes(settings: Settings, pool: aiopg.Pool, redis: aioredis.Redis, volumes: int,
                     orphans: int) -> list[PassFigures]:  # fmt: skip
    provider = TimedProvider("mock")
    await insert_fleet(pool, fleet_rows(provider, volumes // 2, orphans))
    settings = settings.replace(worker_secret_key=_SECRET_KEY, orphan_dry_run=True, orphan_grace_s=0.0)
    rt = Runtime(settings, pool, redis, ProviderSet(settings, lambda code, s: provider), aiohttp.ClientSession())
    try:
        return [
            await measure("reconcile", provider, lambda: reconcile_volumes(rt)),
            await measure("orphan sweep", provider, lambda: sweep_orphans(rt)),
        ]
    finally:
        await rt.http.close()


def render(volumes: int, figures: list[PassFigures]) -> str:
    lines = [f"{volumes} tracked volumes ({volumes // 2} instances)", "",
             "| pass | wall (s) | CPU (s) | of which the in-memory cloud (s) | DB statements | cloud calls |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for f in figures:
        calls = ", ".join(f"{m} {n}" for m, n in f.cloud_calls.items()) or "-"
        lines.append(f"| {f.name} | {f.wall_s} | {f.cpu_s} | {f.cloud_cpu_s} | {f.db_statements} | {calls} |")
    return "\n".join(lines)
