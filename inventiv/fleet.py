"""The operator's fleet checks: `inventiv cloud check` and `inventiv volumes verify`.

Both run on the configured (or embedded) database like every command, ask the clouds through the same
providers the scheduler uses, change nothing, print for a person (JSON with --json), and return 0 when
everything checked out, 1 when something did not. Usage and settings errors are the CLI's (status 2).
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Sequence

from inventiv.command_error import CommandError
from inventiv.services import open_pool
from inventiv.settings import Settings
from scheduler.cloud_check import count, exit_status, render
from scheduler.cloud_probe import check_clouds
from scheduler.runtime import ProviderSet
from scheduler.volume_check import Kind
from scheduler.volume_verify import Report, UnknownInstance, verify_volumes

_UUID = re.compile(r"\b([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_HEADER = ("INSTANCE", "VOLUME", "WHAT", "EXPECTED", "ACTUAL", "VERDICT")


async def cloud_check(settings: Settings, *, as_json: bool) -> int:
    async with open_pool(settings, maxsize=2) as pool:
        providers = ProviderSet(settings)
        try:
            lines = await check_clouds(pool, providers, settings)
        finally:
            await providers.close()
    status = exit_status(lines)
    if as_json:
        print(json.dumps({"ok": status == 0, "checks": [line.as_dict() for line in lines]}, indent=2))
    else:
        print(render(lines))
    return status


async def volumes_verify(settings: Settings, *, instance_id: str | None, as_json: bool) -> int:
    if instance_id is not None:
        instance_id = _instance_id(instance_id)
    async with open_pool(settings, maxsize=4) as pool:
        providers = ProviderSet(settings)
        try:
            report = await verify_volumes(pool, providers, settings.deployment_tag, instance_id)
        except UnknownInstance as exc:
            raise CommandError(str(exc)) from None
        finally:
            await providers.close()
    print(report_json(report) if as_json else report_table(report))
    return 0 if report.ok else 1


def _instance_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise CommandError(f"--instance must be an instance id (a UUID), not {text!r}") from None


def report_json(report: Report) -> str:
    return json.dumps(
        {
            "ok": report.ok,
            "instances": report.instances,
            "volumes": report.volumes,
            "findings": [f.as_dict() for f in report.findings],
        },
        indent=2,
    )


def report_table(report: Report) -> str:
    """One row per thing found as expected and per mismatch, grouped by instance, then the summary line.
    Ids are shortened to their first 8 characters (--json has them whole)."""
    rows = [(c.instance_id, c.subject_id, c.what, c.description, "as expected", "ok") for c in report.checked]
    rows += [
        (f.instance_id or "-", f.volume_id or "-", f.what, f.expected, f.actual, f.verdict) for f in report.findings
    ]
    # Instances first, in the order their rows came; rows with no instance (orphans, unreadable zones) last.
    order = {instance: i for i, instance in enumerate(dict.fromkeys(r[0] for r in rows))}
    rows.sort(key=lambda r: (r[0] == "-", order[r[0]]))
    return table([_HEADER, *[tuple(_shorten(cell) for cell in row) for row in rows]]) + "\n" + summary(report)


def summary(report: Report) -> str:
    checked = f"{count(report.instances, 'instance')}, {count(report.volumes, 'tracked volume')} checked"
    if report.ok:
        return f"{checked}: everything matches"
    kinds = Counter(f.kind for f in report.findings)
    unchecked = kinds.pop(Kind.UNCHECKED, 0)
    parts = []
    if kinds:
        detail = ", ".join(f"{n} {kind.value}" for kind, n in sorted(kinds.items()))
        parts.append(f"{count(sum(kinds.values()), 'mismatch', 'es')} ({detail})")
    if unchecked:
        parts.append(f"{count(unchecked, 'place')} the cloud could not be asked about")
    return f"{checked}: {'; '.join(parts)}"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _shorten(text: str) -> str:
    return _UUID.sub(r"\1", text)
