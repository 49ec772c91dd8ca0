"""Volume reconciliation (interval job): what each live instance's server has attached vs what is tracked.

Every instance with a server is looked at: provisioning once its volumes were discovered (until then the
provisioning pass tracks them, and must tag the boot volume first), booting, ready, and failed before its
cleanup finished. One a pass holds is skipped: its volumes are changing under that pass.

The comparison is scheduler/volume_check.py's, the one `inventiv volumes verify` reports. This job
repairs what it always has:
- a volume attached behind our back is tracked (so termination deletes or keeps it like the others);
- a tracked volume the server no longer lists is recorded detached, or deleted if the cloud has no such
  volume any more;
- a booting or ready instance whose server vanished is failed (and so released).
Any other disagreement (size, type, state, flags) is left to an operator, and logged at debug level.

The server is read once, from its zone's listing: its own listing of its volumes is compared (Scaleway's
leaves out the sizes of some), and the volume API is asked only about the volumes it stopped listing and
those about to be tracked.
"""

from __future__ import annotations

import enum
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from inventiv.action_types import ActionType
from inventiv.statuses import InstanceStatus
from providers.base import AttachedVolume, Provider, ProviderError, Server, Volume
from scheduler import action_log
from scheduler.failure import fail_instance
from scheduler.fanout import fan_out
from scheduler.retry import StepFailed
from scheduler.runtime import Runtime
from scheduler.tracking import described, track_volume
from scheduler.volume_check import Expectation, Finding, Kind, TrackedRecord, compare, tracked_records
from scheduler.volumes import delete_on_terminate_for, untracked, vanished
from sql.queries import fetch_all, queries

log = logging.getLogger(__name__)

# Instances reconciled at once; each costs a few cloud calls.
_CONCURRENT = 8


class Repair(enum.Enum):
    TRACK = "track"
    MARK_DETACHED = "mark_detached"
    FORGET = "forget"
    FAIL = "fail"


_REPAIRS = {
    Kind.UNTRACKED: Repair.TRACK,
    Kind.DETACHED: Repair.MARK_DETACHED,
    Kind.WRONG_SERVER: Repair.MARK_DETACHED,
    # Only the volumes the server stopped listing are looked up, so only those can be found missing.
    Kind.VOLUME_MISSING: Repair.FORGET,
    Kind.SERVER_MISSING: Repair.FAIL,
}


def repairs(findings: Sequence[Finding], status: str) -> list[tuple[Repair, Finding]]:
    """What this job does about each finding of an instance in `status`; findings left out are not its to fix.

    A vanished server is found only where the status needs one (volume_check.SERVER_STATUSES); it fails
    the instance but for a provisioning one, whose pass notices it itself.
    """
    out = []
    for finding in findings:
        repair = _REPAIRS.get(finding.kind)
        if repair is None or (repair is Repair.FAIL and status == InstanceStatus.PROVISIONING):
            continue
        out.append((repair, finding))
    return out


async def reconcile_volumes(rt: Runtime) -> int:
    """Reconcile every live instance with a server; returns how many changes were recorded.

    The rows are read in two statements, and each zone's servers in one listing (by the deployment's tag):
    a fleet of N instances costs a few statements and a few pages, not N of each. A server the listing
    leaves out (its tags changed by hand, or gone) is then asked for by id.
    """
    async with rt.pool.acquire() as conn:
        rows = await fetch_all(queries.instances.list_instances_to_reconcile(conn))
        if not rows:
            return 0
        volumes = await fetch_all(
            queries.instance_volumes.list_tracked_volumes_of_instances(
                conn, instance_ids=[str(row["id"]) for row in rows]
            )
        )
    tracked: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for volume in volumes:
        tracked[str(volume["instance_id"])].append(volume)
    listed = await _list_servers(rt, {(row["provider_code"], row["zone_code"]) for row in rows})
    work = [(row, tracked_records(tracked[str(row["id"])])) for row in rows if _zone(row) in listed]
    return sum(await fan_out(work, partial(_reconcile_or_skip, rt, listed), limit=_CONCURRENT))


def _zone(row: dict[str, Any]) -> tuple[str, str]:
    return row["provider_code"], row["zone_code"]


async def _list_servers(rt: Runtime, zones: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Server]]:
    """Each zone's servers carrying the deployment's tag, by id; a zone that cannot be listed is left out."""
    listed = {}
    for provider_code, zone in sorted(zones):
        try:
            servers = await rt.providers.get(provider_code).list_servers(zone, [rt.settings.deployment_tag])
        except ProviderError as exc:
            log.warning(
                "reconciliation skipped a zone",
                extra={"provider": provider_code, "zone": zone, "error_code": exc.code, "error": exc.message},
            )
            continue
        listed[(provider_code, zone)] = {server.id: server for server in servers}
    return listed


async def _reconcile_or_skip(
    rt: Runtime, listed: dict[tuple[str, str], dict[str, Server]], item: tuple[dict[str, Any], list[TrackedRecord]]
) -> int:
    row, tracked = item
    # One instance's cloud trouble must not stop the others from being reconciled.
    try:
        return await _reconcile(rt, row, tracked, listed[_zone(row)])
    except ProviderError as exc:
        log.warning(
            "reconciliation skipped an instance",
            extra={"instance_id": row["id"], "error_code": exc.code, "error": exc.message},
        )
        return 0


@dataclass(frozen=True, slots=True)
class _Instance:
    rt: Runtime
    provider: Provider
    zone: str
    expect: Expectation

    @property
    def id(self) -> str:
        return self.expect.instance_id


async def _reconcile(rt: Runtime, row: dict[str, Any], tracked: list[TrackedRecord], listed: dict[str, Server]) -> int:
    expect = Expectation.from_row(row)
    assert expect.server_id is not None, "list-instances-to-reconcile returns instances with a server"
    instance = _Instance(rt, rt.providers.get(row["provider_code"]), row["zone_code"], expect)
    # The rows were read before the cloud: a pass that changes them meanwhile (provisioning attaching, a
    # release detaching) then shows as a change the cloud already made, which the repairs below record
    # again harmlessly, never as a volume that vanished.
    server = listed.get(expect.server_id)
    if server is None:
        server = await instance.provider.get_server(instance.zone, expect.server_id)
    attached = None if server is None else list(server.volumes)
    findings = compare(expect, tracked, attached, await _look_up_vanished(instance, tracked, attached))
    changes = 0
    # Tracking takes the server's own entry of each volume, which a finding does not carry: the untracked
    # volumes themselves, as compare found them (its UNTRACKED findings).
    for volume in untracked(tracked, attached or ()):
        await _track(instance, await described(instance.provider, instance.zone, volume))
        changes += 1
    for repair, finding in repairs(findings, row["status"]):
        if repair is not Repair.TRACK:
            changes += await _repair(instance, repair, finding)
    _log_left(instance, findings)
    return changes


async def _look_up_vanished(
    instance: _Instance, tracked: list[TrackedRecord], attached: list[AttachedVolume] | None
) -> dict[str, Volume | None]:
    """The cloud's record of each volume the server stopped listing: detached, elsewhere, or gone."""
    if attached is None:
        return {}
    return {
        v.provider_volume_id: await instance.provider.get_volume(instance.zone, v.provider_volume_id)
        for v in vanished(tracked, attached)
    }


async def _repair(instance: _Instance, repair: Repair, finding: Finding) -> int:
    """A finding's repair, but tracking (done from the server's listing)."""
    rt = instance.rt
    if repair is Repair.FAIL:
        gone = StepFailed("PROVIDER_SERVER_GONE", f"server {instance.expect.server_id} is gone")
        await fail_instance(rt, instance.id, gone)
        return 1
    volume_id = finding.volume_id
    assert volume_id is not None
    exists = repair is Repair.MARK_DETACHED
    mark = queries.instance_volumes.mark_volume_detached if exists else queries.instance_volumes.mark_volume_deleted
    async with rt.pool.acquire() as conn:
        await mark(conn, instance_id=instance.id, provider_volume_id=volume_id)
    action = ActionType.RECONCILE_VOLUME_DETACHED if exists else ActionType.RECONCILE_VOLUME_GONE
    await action_log.record(rt.pool, instance.id, action, volume_id=volume_id)
    return 1


async def _track(instance: _Instance, volume: AttachedVolume) -> None:
    delete = delete_on_terminate_for(volume, instance.expect.data_delete_on_terminate)
    async with instance.rt.pool.acquire() as conn:
        await track_volume(conn, instance.id, volume, delete_on_terminate=delete)
    await action_log.record(
        instance.rt.pool,
        instance.id,
        ActionType.RECONCILE_TRACK_VOLUME,
        volume_id=volume.id,
        slot=volume.slot,
        volume_type=volume.volume_type,
        delete_on_terminate=delete,
    )


def _log_left(instance: _Instance, findings: list[Finding]) -> None:
    """Findings this job does not repair: every run sees them again until an operator acts (`inventiv
    volumes verify` reports them), so debug only."""
    repaired = set(_REPAIRS)
    for finding in findings:
        if finding.kind not in repaired:
            log.debug(
                "volume mismatch left to an operator (see `inventiv volumes verify`)",
                extra={"instance_id": instance.id, "volume_id": finding.volume_id, "kind": finding.kind.value,
                       "expected": finding.expected, "actual": finding.actual},
            )  # fmt: skip
