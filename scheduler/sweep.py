"""Orphan sweep (interval job): servers and volumes carrying this deployment's tag that no live
instance owns, older than a grace period, are deleted; with `--dry-run` they are only reported.

Live means an instance row whose release has not finished; a volume tracked by one, or kept on purpose
(persistent data of a terminated instance), is never an orphan. The workers' firewall of a zone (a
Scaleway security group, shared by the zone's workers) goes once no server uses it and no live instance
is in that zone; the provider makes it again for the next worker. Resources without this deployment's
tag are never looked at twice: they belong to someone else. Every finding is an action_logs row.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiopg

from inventiv.action_types import ActionType
from providers.base import Firewall, Provider, ProviderError, Server, Volume, VolumeState
from scheduler import action_log
from scheduler.naming import tagged_instance_id
from scheduler.runtime import Runtime
from sql.queries import fetch_all, queries

log = logging.getLogger(__name__)


class Kind(enum.StrEnum):
    SERVER = "server"
    VOLUME = "volume"
    FIREWALL = "firewall"


_ACTION_TYPES = {
    Kind.SERVER: ActionType.ORPHAN_SERVER_DELETE,
    Kind.VOLUME: ActionType.ORPHAN_VOLUME_DELETE,
    Kind.FIREWALL: ActionType.ORPHAN_FIREWALL_DELETE,
}


@dataclass(frozen=True, slots=True)
class Resource:
    kind: Kind
    id: str
    name: str
    tags: tuple[str, ...]
    created_at: datetime | None
    # Volumes: the server it is attached to, if any; firewalls: a server that uses it.
    attached_to: str | None = None

    @property
    def owner(self) -> str | None:
        return tagged_instance_id(self.tags)

    @classmethod
    def of_server(cls, server: Server) -> Resource:
        return cls(Kind.SERVER, server.id, server.name, tuple(server.tags), server.created_at)

    @classmethod
    def of_volume(cls, volume: Volume) -> Resource:
        attached = volume.server_id if volume.state is not VolumeState.AVAILABLE else None
        return cls(Kind.VOLUME, volume.id, volume.name, tuple(volume.tags), volume.created_at, attached)

    @classmethod
    def of_firewall(cls, firewall: Firewall) -> Resource:
        used_by = firewall.server_ids[0] if firewall.server_ids else None
        return cls(Kind.FIREWALL, firewall.id, firewall.name, tuple(firewall.tags), firewall.created_at, used_by)


@dataclass(frozen=True, slots=True)
class Ownership:
    """What the database says is in use."""

    live_instance_ids: frozenset[str]
    # Servers of live instances and volumes tracked (or kept) by instances.
    protected_ids: frozenset[str]
    # (provider, zone) of every live instance: their workers' firewall stays.
    busy_zones: frozenset[tuple[str, str]] = frozenset()


def find_orphans(
    resources: Iterable[Resource], *, deployment_tag: str, owned: Ownership, now: datetime, grace_s: float,
    zone_busy: bool = False,
) -> list[Resource]:  # fmt: skip
    """The resources to delete (`zone_busy`: a live instance is in their zone).

    A resource of unknown age counts as old: everything we create is tagged with a live row that exists
    before the resource does, so the grace period only covers clocks and listings that lag.
    """
    orphans = []
    for resource in resources:
        if deployment_tag not in resource.tags or resource.id in owned.protected_ids:
            continue
        if resource.kind is Kind.FIREWALL and (zone_busy or resource.attached_to is not None):
            continue
        if resource.owner is not None and resource.owner in owned.live_instance_ids:
            continue
        if resource.created_at is not None and (now - resource.created_at).total_seconds() < grace_s:
            continue
        orphans.append(resource)
    return orphans


async def sweep_orphans(rt: Runtime, now: datetime | None = None) -> list[Resource]:
    """One sweep over every zone this deployment has used; returns the orphans found.

    Every zone is listed first, then what the database owns is read once for all of them: a resource
    created in between belongs to a row already seen, and the read does not repeat per zone.
    """
    async with rt.pool.acquire() as conn:
        zones = await fetch_all(queries.instances.list_sweep_zones(conn))
    listed: list[tuple[Provider, str, list[Resource]]] = []
    for zone in zones:
        try:
            provider = rt.providers.get(zone["provider_code"])
            listed.append((provider, zone["zone_code"], await _list_zone(rt, provider, zone["zone_code"])))
        except ProviderError as exc:
            log.warning(
                "orphan sweep skipped a zone",
                extra={
                    "provider": zone["provider_code"],
                    "zone": zone["zone_code"],
                    "error_code": exc.code,
                    "error": exc.message,
                },
            )
    if not listed:
        return []
    owned = await ownership(rt.pool)
    found: list[Resource] = []
    for provider, zone_code, resources in listed:
        found += await _sweep_zone(rt, provider, zone_code, resources, owned, now)
    return found


async def ownership(pool: aiopg.Pool) -> Ownership:
    """What the database says is in use (cloud check reads it the same way)."""
    async with pool.acquire() as conn:
        instances = await fetch_all(queries.instances.list_live_instance_resources(conn))
        volumes = await fetch_all(queries.instance_volumes.list_live_tracked_volume_ids(conn))
    servers = {row["provider_instance_id"] for row in instances if row["provider_instance_id"]}
    return Ownership(
        live_instance_ids=frozenset(str(row["id"]) for row in instances),
        protected_ids=frozenset(servers | {row["provider_volume_id"] for row in volumes}),
        busy_zones=frozenset((row["provider_code"], row["zone_code"]) for row in instances),
    )


async def _list_zone(rt: Runtime, provider: Provider, zone: str) -> list[Resource]:
    tag = rt.settings.deployment_tag
    listed = [Resource.of_server(s) for s in await provider.list_servers(zone, [tag])]
    listed += [Resource.of_volume(v) for v in await provider.list_volumes(zone, [tag])]
    listed += [Resource.of_firewall(f) for f in await provider.list_firewalls(zone, [tag])]
    return listed


async def _sweep_zone(
    rt: Runtime, provider: Provider, zone: str, listed: list[Resource], owned: Ownership, now: datetime | None
) -> list[Resource]:
    orphans = find_orphans(
        listed,
        deployment_tag=rt.settings.deployment_tag,
        owned=owned,
        now=now or datetime.now(UTC),
        grace_s=rt.settings.orphan_grace_s,
        zone_busy=(provider.code, zone) in owned.busy_zones,
    )
    known = await _existing_instance_ids(rt, {o.owner for o in orphans if o.owner})
    for orphan in orphans:
        await _delete(rt, provider, zone, orphan, orphan.owner if orphan.owner in known else None)
    return orphans


async def _existing_instance_ids(rt: Runtime, ids: set[str]) -> set[str]:
    if not ids:
        return set()
    async with rt.pool.acquire() as conn:
        rows = await fetch_all(queries.instances.list_existing_instance_ids(conn, instance_ids=sorted(ids)))
    return {str(row["id"]) for row in rows}


async def _delete(rt: Runtime, provider: Provider, zone: str, orphan: Resource, instance_id: str | None) -> None:
    dry_run = rt.settings.orphan_dry_run
    action_type = _ACTION_TYPES[orphan.kind]
    details: dict[str, Any] = {
        "provider": provider.code,
        "zone": zone,
        "resource_id": orphan.id,
        "resource_name": orphan.name,
        "tags": list(orphan.tags),
        "dry_run": dry_run,
    }
    log.warning("orphan found", extra={**details, "kind": orphan.kind.value})
    if orphan.kind is Kind.VOLUME and orphan.attached_to is not None:
        # Deleting an attached volume fails; its server is swept (or released) first, this one next time.
        await action_log.record(
            rt.pool, instance_id, action_type, **details, skipped="attached", server_id=orphan.attached_to
        )
        return
    if dry_run:
        await action_log.record(rt.pool, instance_id, action_type, **details, skipped="dry_run")
        return
    try:
        if orphan.kind is Kind.SERVER:
            await provider.terminate_server(zone, orphan.id)
        elif orphan.kind is Kind.FIREWALL:
            await provider.delete_firewall(zone, orphan.id)
        else:
            await provider.delete_volume(zone, orphan.id)
    except ProviderError as exc:
        await action_log.record(rt.pool, instance_id, action_type, error=exc, **details)
        return
    await action_log.record(rt.pool, instance_id, action_type, **details)
