"""`inventiv cloud check`'s reads: the catalog's providers and zones, and each configured cloud.

For every provider: can it be asked at all (Scaleway: its key and project; the mock cloud: its state
folder), do its credentials work (the first zone's server listing is the cheap authenticated call), then
per zone (active ones, and any where a server was ever asked for): the servers and volumes carrying the
deployment tag and how many no live instance owns (by the orphan sweep's rule, with no grace period;
what the database says is owned is read once, after every zone was listed, as the sweep reads it after its
listing), and the stock of every type the catalog offers there (`Provider.availability`). Reads only;
the lines are decided in scheduler/cloud_check.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiopg

from inventiv.settings import Settings
from providers.base import AuthError, Availability, InvalidRequest, Provider, ProviderError
from scheduler.cloud_check import (
    ANY_ZONE,
    Credentials,
    Level,
    Line,
    Tagged,
    credentials_failed,
    credentials_ok,
    not_configured,
    stock_lines,
    tagged_line,
)
from scheduler.runtime import ProviderSet
from scheduler.sweep import Kind, Ownership, Resource, find_orphans, ownership
from sql.queries import fetch_all, queries

# What a zone's reads may fail with besides a provider error: the mock cloud's state file unreadable.
_ZONE_ERRORS = (ProviderError, OSError, ValueError)


@dataclass(frozen=True, slots=True)
class _Target:
    """One provider to check, as the catalog has it."""

    code: str
    live_instances: int
    zones: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _ZoneRead:
    """What one zone answered: the resources carrying the deployment tag, and the stock of the offered types."""

    provider: str
    zone: str
    listed: list[Resource]
    offered: list[str]
    stock: Mapping[str, Availability]

    def lines(self, tag: str, owned: Ownership, now: datetime) -> list[Line]:
        orphans = find_orphans(self.listed, deployment_tag=tag, owned=owned, now=now, grace_s=0)
        tagged = Tagged(
            servers=_of_kind(self.listed, Kind.SERVER),
            volumes=_of_kind(self.listed, Kind.VOLUME),
            orphan_servers=_of_kind(orphans, Kind.SERVER),
            orphan_volumes=_of_kind(orphans, Kind.VOLUME),
        )
        lines = [tagged_line(self.provider, self.zone, tag, tagged)]
        if self.offered:
            lines += stock_lines(self.provider, self.zone, self.offered, self.stock)
        return lines


async def check_clouds(pool: aiopg.Pool, providers: ProviderSet, settings: Settings) -> list[Line]:
    async with pool.acquire() as conn:
        catalog = await fetch_all(queries.fleet.list_check_providers(conn))
        zones = await fetch_all(queries.fleet.list_check_zones(conn))
    by_provider: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for zone in zones:
        by_provider[zone["provider_code"]].append(zone)
    found: list[Line | _ZoneRead] = []
    for row in catalog:
        target = _Target(row["code"], row["live_instances"], by_provider[row["code"]])
        if not row["is_active"] and not target.live_instances:
            found.append(Line(Level.SKIP, target.code, ANY_ZONE, "inactive in the catalog, and no live instance"))
            continue
        found += await _check_provider(providers, settings, target)
    # Read after every listing, as the sweep does: a resource made meanwhile has its row already.
    owned, now = await ownership(pool), datetime.now(UTC)
    lines: list[Line] = []
    for item in found:
        lines += item.lines(settings.deployment_tag, owned, now) if isinstance(item, _ZoneRead) else [item]
    return lines


async def _check_provider(providers: ProviderSet, settings: Settings, target: _Target) -> list[Line | _ZoneRead]:
    """The provider's lines, a zone that answered as what it answered (its lines need the ownership)."""
    provider, reason = _open(providers, settings, target.code)
    if provider is None:
        return [not_configured(target.code, reason, target.live_instances)]
    if not target.zones:
        return [Line(Level.SKIP, target.code, ANY_ZONE, "no active zone, and none ever used: nothing to check")]
    credentials = credentials_of(target.code, settings)
    found: list[Line | _ZoneRead] = []
    answered = False
    for zone in target.zones:
        try:
            found.append(await _read_zone(provider, settings.deployment_tag, zone))
        except AuthError as exc:
            # Every other call would be refused the same way: one line says it.
            return [credentials_failed(target.code, credentials, exc)]
        except _ZONE_ERRORS as exc:
            message = f"cannot be read: {_describe(exc, target.code, settings)}"
            found.append(Line(Level.FAIL, target.code, zone["zone_code"], message))
            continue
        answered = True
    # No zone answered: the failures say why, and nothing showed the credentials work.
    return [credentials_ok(target.code, credentials, _reached(target.code, settings)), *found] if answered else found


def _open(providers: ProviderSet, settings: Settings, code: str) -> tuple[Provider | None, str]:
    """The provider, or None and why it cannot be asked."""
    reason = unconfigured(code, settings)
    if reason is not None:
        return None, reason
    try:
        return providers.get(code), ""
    except InvalidRequest as exc:  # the registry says what is missing (PROVIDER_NOT_CONFIGURED)
        return None, exc.message
    except ValueError as exc:  # a code no implementation serves
        return None, str(exc)


def unconfigured(code: str, settings: Settings) -> str | None:
    """Why a provider cannot be asked, where the registry would not say it (Scaleway's does)."""
    if code == "mock" and not settings.mock_cloud_path.is_dir():
        return f"no state folder {settings.mock_cloud_path} (INVENTIV_MOCK_CLOUD_DIR; made by the first mock server)"
    return None


def _describe(exc: Exception, code: str, settings: Settings) -> str:
    if isinstance(exc, ProviderError):
        return exc.message
    # Not the cloud's answer: the mock cloud's state file, which the message alone does not name.
    return f"{exc} ({settings.mock_cloud_path})" if code == "mock" else str(exc)


def _reached(code: str, settings: Settings) -> str:
    """What a provider without credentials answering says."""
    return f"state folder {settings.mock_cloud_path} readable" if code == "mock" else "reachable"


def credentials_of(code: str, settings: Settings) -> Credentials | None:
    if code == "scaleway" and settings.scw_default_project_id:
        return Credentials("SCW_SECRET_KEY", "SCW_DEFAULT_PROJECT_ID", settings.scw_default_project_id)
    return None


async def _read_zone(provider: Provider, tag: str, zone: dict[str, Any]) -> _ZoneRead:
    zone_code = zone["zone_code"]
    listed = [Resource.of_server(s) for s in await provider.list_servers(zone_code, [tag])]
    listed += [Resource.of_volume(v) for v in await provider.list_volumes(zone_code, [tag])]
    offered = list(zone["offered_types"])
    stock = await provider.availability(zone_code) if offered else {}
    return _ZoneRead(provider.code, zone_code, listed, offered, stock)


def _of_kind(resources: list[Resource], kind: Kind) -> int:
    return sum(1 for r in resources if r.kind is kind)
