"""`inventiv volumes verify`: every tracked volume of the live instances against the cloud.

It reads the rows and the cloud and leaves the judging to scheduler/volume_check.py; it changes nothing.
Live, as for the orphan sweep and the cloud check: an instance whose cleanup has not finished (deleted_at
unset). Unlike reconciliation it looks every tracked volume up. Each zone used is listed once for the
volumes carrying the deployment tag: that listing is the cloud's record of the tracked volumes it holds
(only the others are asked for one by one), and those no live instance owns, by the sweep's rule
(`scheduler.sweep.find_orphans`, no grace period), are orphans.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aiopg

from providers.base import AttachedVolume, InvalidRequest, Provider, ProviderError, Volume
from scheduler.fanout import fan_out
from scheduler.runtime import ProviderSet
from scheduler.sweep import Ownership, Resource, find_orphans, ownership
from scheduler.volume_check import Checked, Expectation, Finding, Kind, TrackedRecord, checked, compare, tracked_records
from sql.queries import fetch_all, queries

# Instances verified at once; each costs a call for its server and one per tracked volume the listing lacks.
_CONCURRENT = 8

# (provider code, zone code)
_Zone = tuple[str, str]


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


@dataclass
class _Listing:
    """The volumes carrying the deployment tag in each zone listed, and the zones that could not be."""

    volumes: dict[_Zone, dict[str, Volume]] = field(default_factory=dict)
    unchecked: list[Finding] = field(default_factory=list)

    def every_volume(self) -> list[Volume]:
        return [volume for zone in self.volumes.values() for volume in zone.values()]


async def verify_volumes(
    pool: aiopg.Pool, providers: ProviderSet, deployment_tag: str, instance_id: str | None = None
) -> Report:
    """Findings for every live instance (or the one asked for) and the orphans of every zone used (with
    `instance_id`: those tagged for that instance, when it is not live; a live one owns everything tagged
    for it, so nothing is listed)."""
    async with pool.acquire() as conn:
        instances = await fetch_all(queries.fleet.list_verify_instances(conn, instance_id=instance_id))
        rows = await fetch_all(queries.fleet.list_verify_volumes(conn, instance_id=instance_id))
    if instance_id is not None and not instances:
        raise UnknownInstance(f"no instance {instance_id}")
    by_instance: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_instance[str(row["instance_id"])].append(row)
    live = [row for row in instances if row["live"]]
    orphans_wanted = instance_id is None or not live
    listing = _Listing()
    if orphans_wanted:
        listing = await _list_zones(providers, deployment_tag, await _zones(pool, instances, instance_id))
    verify = partial(_verify_instance, providers, by_instance, listing.volumes)
    report = Report(instances=len(live), volumes=sum(_live_rows(by_instance[str(r["id"])]) for r in live))
    for verified in await fan_out(live, verify, limit=_CONCURRENT):
        report.findings += verified.findings
        report.checked += verified.checked
    if orphans_wanted:
        # Ownership is read after the listing: a volume created meanwhile belongs to a row already written.
        found = orphans(listing.every_volume(), deployment_tag=deployment_tag, owned=await ownership(pool))
        if instance_id is not None:
            found = [f for f in found if f.instance_id == instance_id]
        report.findings += listing.unchecked + found
    return report


def orphans(
    volumes: Iterable[Volume], *, deployment_tag: str, owned: Ownership, now: datetime | None = None
) -> list[Finding]:
    """The volumes the orphan sweep would delete (with no grace period), as findings."""
    resources = [Resource.of_volume(volume) for volume in volumes]
    found = find_orphans(resources, deployment_tag=deployment_tag, owned=owned, now=now or datetime.now(UTC), grace_s=0)
    return [_orphan(resource) for resource in found]


def _orphan(resource: Resource) -> Finding:
    owner = resource.owner
    actual = f"tagged for instance {owner}, which has no live row" if owner else "tagged for no instance"
    if resource.attached_to is not None:
        actual += f"; attached to server {resource.attached_to}"
    return Finding(Kind.ORPHAN, owner, resource.id, "ownership", "owned by a live instance", actual)


def _live_rows(rows: list[dict[str, Any]]) -> int:
    return sum(1 for row in rows if row["deleted_at"] is None)


async def _zones(pool: aiopg.Pool, instances: list[dict[str, Any]], instance_id: str | None) -> set[_Zone]:
    """The zones of the instances read, and (for every instance) each zone the sweep lists."""
    zones = {(row["provider_code"], row["zone_code"]) for row in instances}
    if instance_id is None:
        async with pool.acquire() as conn:
            used = await fetch_all(queries.instances.list_sweep_zones(conn))
        zones |= {(z["provider_code"], z["zone_code"]) for z in used}
    return zones


async def _list_zones(providers: ProviderSet, tag: str, zones: set[_Zone]) -> _Listing:
    listing = _Listing()
    for code, zone in sorted(zones):
        try:
            provider = providers.get(code)
        except (InvalidRequest, ValueError):
            # Not configured (or no implementation): nothing of ours there could be reached, by this or by
            # the sweep, and the live instances there have their own finding saying so.
            continue
        try:
            listing.volumes[(code, zone)] = {v.id: v for v in await provider.list_volumes(zone, [tag])}
        except ProviderError as exc:
            listing.unchecked.append(unchecked(None, f"{code} {zone}", exc))
    return listing


async def _verify_instance(
    providers: ProviderSet,
    rows: dict[str, list[dict[str, Any]]],
    listed: Mapping[_Zone, Mapping[str, Volume]],
    row: dict[str, Any],
) -> _Verified:
    expect = Expectation.from_row(row)
    tracked = tracked_records(rows[expect.instance_id])
    zone = (row["provider_code"], row["zone_code"])
    try:
        provider = providers.get(row["provider_code"])
        attached, cloud = await _observe(provider, row["zone_code"], expect, tracked, listed.get(zone, {}))
    except (ProviderError, ValueError) as exc:
        return _Verified([unchecked(expect.instance_id, f"{row['provider_code']} {row['zone_code']}", exc)], [])
    findings = compare(expect, tracked, attached, cloud)
    return _Verified(findings, checked(expect, tracked, attached, findings))


async def _observe(
    provider: Provider, zone: str, expect: Expectation, tracked: Sequence[TrackedRecord], listed: Mapping[str, Volume]
) -> tuple[list[AttachedVolume] | None, dict[str, Volume | None]]:
    """What the server lists (None: no server, or gone) and the cloud's record of every live tracked volume:
    the zone's listing where it has the volume (tagged ones), else the volume API's."""
    attached = None
    if expect.server_id is not None:
        server = await provider.get_server(zone, expect.server_id)
        attached = None if server is None else list(server.volumes)
    cloud: dict[str, Volume | None] = {}
    for volume in tracked:
        if volume.live:
            volume_id = volume.provider_volume_id
            cloud[volume_id] = listed[volume_id] if volume_id in listed else await provider.get_volume(zone, volume_id)
    return attached, cloud


def unchecked(instance_id: str | None, where: str, exc: Exception) -> Finding:
    message = exc.message if isinstance(exc, ProviderError) else str(exc)
    return Finding(Kind.UNCHECKED, instance_id, None, f"cloud ({where})", "reachable", message)
