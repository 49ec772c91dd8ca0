"""`inventiv cloud check`: its findings, one line each, and what they add up to.

Pure; scheduler/cloud_probe.py asks the catalog and the clouds. A line is `ok`, `warn` (worth a look,
not a failure: scarce stock, resources the orphan sweep will delete), `FAIL` (the command exits 1), or
`skip` (nothing could be checked, and nothing depends on it).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from providers.base import AuthError, Availability


class Level(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    SKIP = "skip"


# The zone column of a line about the whole provider.
ANY_ZONE = "-"


@dataclass(frozen=True, slots=True)
class Line:
    level: Level
    provider: str
    zone: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level.value, "provider": self.provider, "zone": self.zone, "message": self.message}


@dataclass(frozen=True, slots=True)
class Credentials:
    """Where a provider's credentials come from, to name the setting at fault."""

    key_setting: str
    project_setting: str
    project: str


def exit_status(lines: Iterable[Line]) -> int:
    return 1 if any(line.level is Level.FAIL for line in lines) else 0


def render(lines: Sequence[Line]) -> str:
    """Aligned columns: level, provider, zone, message."""
    provider_w = max((len(line.provider) for line in lines), default=0)
    zone_w = max((len(line.zone) for line in lines), default=0)
    return "\n".join(
        f"{line.level.value:<4} {line.provider:<{provider_w}} {line.zone:<{zone_w}}  {line.message}" for line in lines
    )


def not_configured(provider: str, reason: str, live_instances: int) -> Line:
    """A provider that cannot be asked fails the check only when live instances depend on it."""
    if live_instances:
        uses = f"{count(live_instances, 'live instance')} use{'s' if live_instances == 1 else ''} it"
        return Line(Level.FAIL, provider, ANY_ZONE, f"not configured: {reason}; {uses}")
    return Line(Level.SKIP, provider, ANY_ZONE, f"not configured: {reason}; no live instance uses it")


def credentials_ok(provider: str, credentials: Credentials | None, detail: str = "") -> Line:
    if credentials is None:
        return Line(Level.OK, provider, ANY_ZONE, detail or "reachable")
    return Line(Level.OK, provider, ANY_ZONE, f"credentials valid (project {short(credentials.project)} reachable)")


def credentials_failed(provider: str, credentials: Credentials | None, exc: AuthError) -> Line:
    if credentials is None:
        return Line(Level.FAIL, provider, ANY_ZONE, f"authentication failed: {exc.message}")
    key, project = credentials.key_setting, credentials.project_setting
    if exc.status == 401:
        message = f"credentials rejected (401): check {key}"
    elif exc.status == 403:
        message = f"access denied (403) to project {short(credentials.project)}: check {project} and {key}'s rights"
    else:
        message = f"authentication failed ({exc.status or 'no status'}): check {key} and {project}"
    return Line(Level.FAIL, provider, ANY_ZONE, message)


@dataclass(frozen=True, slots=True)
class Tagged:
    """Resources carrying the deployment tag in one zone, and how many of them no live instance owns."""

    servers: int
    volumes: int
    orphan_servers: int
    orphan_volumes: int


def tagged_line(provider: str, zone: str, tag: str, tagged: Tagged) -> Line:
    found = f"{count(tagged.servers, 'server')} and {count(tagged.volumes, 'volume')} tagged {tag}"
    if not (tagged.orphan_servers or tagged.orphan_volumes):
        return Line(Level.OK, provider, zone, f"{found}, all of live instances")
    orphaned = f"{count(tagged.orphan_servers, 'server')} and {count(tagged.orphan_volumes, 'volume')}"
    sweep = "the orphan sweep deletes them after INVENTIV_ORPHAN_GRACE_S"
    return Line(Level.WARN, provider, zone, f"{found}; {orphaned} belong to no live instance ({sweep})")


def stock_lines(provider: str, zone: str, offered: Sequence[str], stock: Mapping[str, Availability]) -> list[Line]:
    """One ok line for the offered types in stock, then one line per type that is not: a shortage fails
    (provisioning it here fails now), scarce stock or a type the provider does not report is a warning."""
    available, problems = [], []
    for code in offered:
        availability = stock.get(code, Availability.UNKNOWN)
        if availability is Availability.AVAILABLE:
            available.append(code)
        elif availability is Availability.SHORTAGE:
            problems.append(Line(Level.FAIL, provider, zone, f"{code}: out of stock (shortage)"))
        elif availability is Availability.SCARCE:
            problems.append(Line(Level.WARN, provider, zone, f"{code}: stock is scarce"))
        else:
            problems.append(Line(Level.WARN, provider, zone, f"{code}: the provider reports no stock for this type"))
    head = [Line(Level.OK, provider, zone, f"in stock: {', '.join(available)}")] if available else []
    return head + problems


def count(n: int, noun: str, plural: str = "s") -> str:
    """`n` and the noun, with the plural's ending unless one."""
    return f"{n} {noun}" + ("" if n == 1 else plural)


def short(identifier: str) -> str:
    return identifier if len(identifier) <= 8 else identifier[:8] + "..."
