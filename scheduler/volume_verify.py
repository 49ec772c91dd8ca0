"""`inventiv volumes verify`: every tracked volume of the live instances against the cloud.

It reads the rows and the cloud and leaves the judging to scheduler/volume_check.py; it changes nothing.
Unlike reconciliation it looks every tracked volume up, and it lists every zone this deployment used for
volumes carrying its tag that no live instance owns. Live here: any status but terminated and released.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiopg

from providers.base import AttachedVolume, InvalidRequest, Provider, ProviderError, Volume
from scheduler.fanout import fan_out
from scheduler.runtime import ProviderSet
from scheduler.volume_check import (
    Checked,
    Expectation,
    Finding,
    Kind,
    TrackedRecord,
    checked,
    compare,
    orphans,
    tracked_records,
)
from sql.queries import fetch_all, queries

# Instances verified at once; each costs a call per server and per volume.
_CONCURRENT = 8


class UnknownInstance(LookupError):
    pass


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    checked: list[Checked] = field(default_factory=list)
    instances: int = 0
    volumes: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings


@dataclass(frozen=True, slots=True)
class _Verified:
    findings: list[Finding]
    checked: list[Checked]


async def verify_volumes(
    pool: aiopg.Pool, providers: ProviderSet, deployment_tag: str, instance_id: str | None = None
) -> Report:
    """Findings for every live instance (or the one asked for) and the orphans of every zone used."""
    async with pool.acquire() as conn:
        instances = await fetch_all(queries.fleet.list_verify_instances(conn, instance_id=instance_id))
        rows = await fetch_all(queries.fleet.list_verify_volumes(conn, instance_id=instance_id))
    if instance_id is not None and not instances:
        raise UnknownInstance(f"no instance {instance_id}")
    by_instance: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_instance[str(row["instance_id"])].append(row)
    live = [row for row in instances if row["live"]]
    verify = partial(_verify_instance, providers, by_instance)
    report = Report(instances=len(live), volumes=sum(_live_rows(by_instance[str(r["id"])]) for r in live))
    for verified in await fan_out(live, verify, limit=_CONCURRENT):
        report.findings += verified.findings
        report.checked += verified.checked
    report.findings += await _orphans(pool, providers, deployment_tag, instances, instance_id)
    return report


def _live_rows(rows: list[dict[str, Any]]) -> int:
    return sum(1 for row in rows if row["deleted_at"] is None)


async def _verify_instance(
    providers: ProviderSet, rows: dict[str, list[dict[str, Any]]], row: dict[str, Any]
) -> _Verified:
    expect = Expectation.from_row(row)
    tracked = tracked_records(rows[expect.instance_id])
    try:
        provider = providers.get(row["provider_code"])
        attached, cloud = await _observe(provider, row["zone_code"], expect, tracked)
    except (ProviderError, ValueError) as exc:
        return _Verified([unchecked(expect.instance_id, f"{row['provider_code']} {row['zone_code']}", exc)], [])
    findings = compare(expect, tracked, attached, cloud)
    return _Verified(findings, checked(expect, tracked, attached, findings))


async def _observe(
    provider: Provider, zone: str, expect: Expectation, tracked: Sequence[TrackedRecord]
) -> tuple[list[AttachedVolume] | None, dict[str, Volume | None]]:
    """What the server lists (None: no server, or gone) and the cloud's record of every live tracked volume."""
    attached = None
    if expect.server_id is not None:
        server = await provider.get_server(zone, expect.server_id)
        attached = None if server is None else list(server.volumes)
    cloud = {v.provider_volume_id: await provider.get_volume(zone, v.provider_volume_id) for v in tracked if v.live}
    return attached, cloud


async def _orphans(
    pool: aiopg.Pool, providers: ProviderSet, tag: str, instances: list[dict[str, Any]], instance_id: str | None
) -> list[Finding]:
    """Volumes carrying the tag that no live instance owns, in every zone used (with `instance_id`: that
    instance's zone, and only volumes tagged for it)."""
    zones = {(row["provider_code"], row["zone_code"]) for row in instances}
    if instance_id is None:
        async with pool.acquire() as conn:
            used = await fetch_all(queries.instances.list_sweep_zones(conn))
        zones |= {(z["provider_code"], z["zone_code"]) for z in used}
    volumes: list[Volume] = []
    findings: list[Finding] = []
    for code, zone in sorted(zones):
        try:
            provider = providers.get(code)
        except (InvalidRequest, ValueError):
            # Not configured (or no implementation): nothing of ours there could be reached, by this or by
            # the sweep, and the live instances there have their own finding saying so.
            continue
        try:
            volumes += await provider.list_volumes(zone, [tag])
        except ProviderError as exc:
            findings.append(unchecked(None, f"{code} {zone}", exc))
    # Ownership is read after the listing: a volume created meanwhile belongs to a row already written.
    live_ids, protected = await _ownership(pool)
    found = orphans(volumes, deployment_tag=tag, live_instance_ids=live_ids, protected_ids=protected)
    if instance_id is not None:
        found = [f for f in found if f.instance_id == instance_id]
    return findings + found


async def _ownership(pool: aiopg.Pool) -> tuple[frozenset[str], frozenset[str]]:
    async with pool.acquire() as conn:
        live = await fetch_all(queries.fleet.list_verify_instances(conn, instance_id=None))
        kept = await fetch_all(queries.instance_volumes.list_live_tracked_volume_ids(conn))
    return frozenset(str(row["id"]) for row in live), frozenset(row["provider_volume_id"] for row in kept)


def unchecked(instance_id: str | None, where: str, exc: Exception) -> Finding:
    message = exc.message if isinstance(exc, ProviderError) else str(exc)
    return Finding(Kind.UNCHECKED, instance_id, None, f"cloud ({where})", "reachable", message)
