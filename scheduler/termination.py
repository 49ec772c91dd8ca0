"""Release: take everything an instance holds back from the cloud, for `terminating` instances and for
`failed` ones (whatever provisioning created before it failed).

Volumes are tracked before the server goes (terminate deletes some, detaches others), the ones to keep
are detached first, then the server is terminated (the provider powers on or deletes as the state
allows), and once it is gone each tracked volume is deleted when it should be, or recorded as kept.
Every pass starts from what the cloud says now, so repeating it is harmless and a server already gone
counts as done.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from inventiv.action_types import ActionType
from inventiv.statuses import InstanceStatus
from providers.base import (
    AttachedVolume,
    InvalidRequest,
    Provider,
    ProviderError,
    Server,
    ServerState,
    Volume,
    VolumeState,
)
from scheduler import action_log
from scheduler.lifecycle import ReleaseFacts, ReleaseStep, next_release_step
from scheduler.naming import data_volume_name, instance_tag, is_ours, resource_tags
from scheduler.retry import StepFailed
from scheduler.runtime import Runtime
from scheduler.tracking import described, track_volume
from scheduler.volumes import TrackedVolume, VolumeAction, delete_on_terminate_for, release_action, untracked
from scheduler.work import MAX_STEPS_PER_PASS, InstanceWork, Pass, load_work
from sql.queries import queries

log = logging.getLogger(__name__)

# The long step each kind of release is logged as, open from its first pass to its last (a span type).
_SPAN: dict[str, ActionType] = {
    InstanceStatus.TERMINATING: ActionType.EXECUTE_TERMINATE,
    InstanceStatus.FAILED: ActionType.EXECUTE_CLEANUP,
}
# Tagged volumes the cloud is already removing are not worth tracking.
_GOING = (VolumeState.DELETING, VolumeState.DELETED)


@dataclass
class _View:
    """What the cloud holds for the instance right now."""

    servers: list[Server]
    attached: dict[str, list[AttachedVolume]]
    untracked_attached: list[AttachedVolume]
    untracked_tagged: list[Volume]
    settle: list[tuple[TrackedVolume, VolumeAction]] = field(default_factory=list)


@dataclass
class _Context:
    rt: Runtime
    work: InstanceWork
    provider: Provider

    @property
    def zone(self) -> str:
        return self.work.zone_code

    @property
    def delete_all(self) -> bool:
        return self.work.status == InstanceStatus.FAILED


async def advance(rt: Runtime, work: InstanceWork) -> Pass:
    """Take release steps until the instance must wait for the cloud, or is released."""
    await action_log.open_span(rt.pool, work.id, _SPAN[work.status])
    try:
        provider = rt.providers.get(work.provider_code)
    except (ProviderError, ValueError) as exc:
        # No provider object can be made (credentials missing, code unknown), so none created anything,
        # unless something was recorded: then the cloud must be reached, and this keeps retrying.
        if work.provider_instance_id is None and not work.live_volumes:
            return await _finish(rt, work, provider_unavailable=str(exc))
        raise
    ctx = _Context(rt, work, provider)
    stepped = False
    for _ in range(MAX_STEPS_PER_PASS):
        view = await _observe(ctx)
        step = next_release_step(_facts(ctx, view))
        if step is ReleaseStep.FINISH:
            return await _finish(
                rt, ctx.work, kept_volumes=[v.provider_volume_id for v in ctx.work.live_volumes if _kept(ctx, v)]
            )
        if step is ReleaseStep.WAIT or await _PERFORM[step](ctx, view):
            # Terminating is a step that then waits: for the server to go, a new wait.
            stepped = stepped or step is ReleaseStep.TERMINATE
            delay = ctx.work.wait_delay_s(rt.settings, stepped=stepped)
            return Pass(ctx.work.status, delay, waiting=True, stepped=stepped)
        stepped = True
        reloaded = await load_work(rt.pool, rt.settings, work.id)
        if reloaded is None:
            return Pass(work.status, 0.0)
        ctx.work = reloaded
        if step is ReleaseStep.SETTLE_VOLUMES and all_settled(view.settle):
            # No server and no untracked volume was left, and every tracked volume is now deleted,
            # forgotten or recorded as kept: nothing a new look at the cloud could change.
            return await _finish(rt, ctx.work, kept_volumes=[v.provider_volume_id for v in ctx.work.live_volumes])
    return Pass(ctx.work.status, 0.0)


async def _observe(ctx: _Context) -> _View:
    """The cloud's view, read as cheaply as each step allows: while servers exist only they matter (their
    volume lists come with them); once every server is gone, the tagged volumes and each tracked one."""
    servers = await _find_servers(ctx)
    attached = {server.id: list(server.volumes) for server in servers}
    all_attached = [v for volumes in attached.values() for v in volumes]
    view = _View(
        servers=servers,
        attached=attached,
        untracked_attached=untracked(ctx.work.volumes, all_attached),
        untracked_tagged=[],
    )
    if servers:
        return view
    # A tagged volume no row tracks was created by a pass that died before recording it. Detached, the
    # server's going changes nothing for it, so it is looked for only now.
    tagged = await ctx.provider.list_volumes(ctx.zone, [instance_tag(ctx.work.id)])
    known = {v.provider_volume_id for v in ctx.work.volumes}
    view.untracked_tagged = [
        v
        for v in tagged
        if v.id not in known
        and v.state not in _GOING
        and is_ours(v.tags, ctx.rt.settings.deployment_tag)
        and instance_tag(ctx.work.id) in v.tags
    ]
    for volume in ctx.work.live_volumes:
        found = await ctx.provider.get_volume(ctx.zone, volume.provider_volume_id)
        state = found.state if found is not None else None
        view.settle.append((volume, release_action(volume, state, delete_all=ctx.delete_all)))
    return view


async def _find_servers(ctx: _Context) -> list[Server]:
    """The instance's servers: any carrying its tags (the recorded one, and one created by a pass that died
    before recording it), and the recorded one even if its tags were changed."""
    tags = resource_tags(ctx.rt.settings.deployment_tag, ctx.work.id)
    found = {server.id: server for server in await ctx.provider.list_servers(ctx.zone, tags)}
    recorded = ctx.work.provider_instance_id
    if recorded is not None and recorded not in found:
        server = await ctx.provider.get_server(ctx.zone, recorded)
        if server is not None:
            found[server.id] = server
    return list(found.values())


def all_settled(settle: list[tuple[TrackedVolume, VolumeAction]]) -> bool:
    """Whether settling these leaves nothing to wait for (no volume was still attached or busy)."""
    return all(action is not VolumeAction.WAIT for _, action in settle)


def _kept(ctx: _Context, volume: TrackedVolume) -> bool:
    return not (ctx.delete_all or volume.delete_on_terminate or volume.is_boot)


def _kept_attached(ctx: _Context, view: _View) -> list[tuple[str, TrackedVolume]]:
    """(server id, volume) for each volume to keep that is still attached and not yet asked to detach."""
    out = []
    for volume in ctx.work.live_volumes:
        if not _kept(ctx, volume) or volume.detached_at is not None:
            continue
        for server_id, volumes in view.attached.items():
            if any(a.id == volume.provider_volume_id for a in volumes):
                out.append((server_id, volume))
    return out


def _facts(ctx: _Context, view: _View) -> ReleaseFacts:
    return ReleaseFacts(
        server_states=[s.state for s in view.servers],
        untracked=bool(view.untracked_attached or view.untracked_tagged),
        kept_attached=bool(_kept_attached(ctx, view)),
        volume_actions=[action for _, action in view.settle],
    )


# -- steps: each returns True when the pass should stop and wait for the cloud ---------------------------


async def _track_volumes(ctx: _Context, view: _View) -> bool:
    work = ctx.work
    found = [{"id": v.id, "slot": v.slot, "type": v.volume_type} for v in view.untracked_attached]
    found += [{"id": v.id, "name": v.name, "type": v.volume_type} for v in view.untracked_tagged]
    async with action_log.logged(ctx.rt.pool, work.id, ActionType.DISCOVER_VOLUMES, untracked=found):
        # A server's own listing may not say a volume's size or name (Scaleway sbs entries): ask the volume.
        attached = [await described(ctx.provider, ctx.zone, a) for a in view.untracked_attached]
        async with ctx.rt.pool.acquire() as conn:
            for a in attached:
                delete = delete_on_terminate_for(a, work.data_volume_delete_on_terminate)
                await track_volume(conn, work.id, a, delete_on_terminate=delete)
            for v in view.untracked_tagged:
                # Tagged for this instance but never recorded: its data volume (kept if asked), or its boot
                # volume left behind by a server deleted before discovery (always deleted).
                keepable = v.name == data_volume_name(work.id)
                delete = work.data_volume_delete_on_terminate if keepable else True
                await track_volume(conn, work.id, v, delete_on_terminate=delete)
    return False


async def _detach_kept(ctx: _Context, view: _View) -> bool:
    for server_id, volume in _kept_attached(ctx, view):
        async with action_log.logged(
            ctx.rt.pool, ctx.work.id, ActionType.PROVIDER_DETACH_VOLUME,
            server_id=server_id, volume_id=volume.provider_volume_id,
        ):
            await ctx.provider.detach_volume(ctx.zone, server_id, volume.provider_volume_id)
            async with ctx.rt.pool.acquire() as conn:
                await queries.instance_volumes.mark_volume_detached(
                    conn, instance_id=ctx.work.id, provider_volume_id=volume.provider_volume_id
                )
    return False


async def _terminate(ctx: _Context, view: _View) -> bool:
    for server in view.servers:
        if server.state is ServerState.STOPPING:
            continue
        try:
            async with action_log.logged(
                ctx.rt.pool, ctx.work.id, ActionType.PROVIDER_TERMINATE,
                server_id=server.id, server_state=server.state.value,
            ):
                await ctx.provider.terminate_server(ctx.zone, server.id)
        except InvalidRequest:
            # Some states allow neither terminate nor delete (Scaleway's "stopped in place"): power the
            # server on, and a later pass terminates it once it runs.
            if "poweron" not in server.allowed_actions:
                raise
            async with action_log.logged(
                ctx.rt.pool, ctx.work.id, ActionType.PROVIDER_START, server_id=server.id, reason="terminate"
            ):
                await ctx.provider.power_on(ctx.zone, server.id)
    return True


async def _settle_volumes(ctx: _Context, view: _View) -> bool:
    pool, instance_id = ctx.rt.pool, ctx.work.id
    for volume, action in view.settle:
        volume_id = volume.provider_volume_id
        if action is VolumeAction.DELETE:
            async with action_log.logged(
                pool, instance_id, ActionType.PROVIDER_DELETE_VOLUME, volume_id=volume_id, is_boot=volume.is_boot
            ):
                await ctx.provider.delete_volume(ctx.zone, volume_id)
        if action in (VolumeAction.DELETE, VolumeAction.FORGET):
            async with pool.acquire() as conn:
                await queries.instance_volumes.mark_volume_deleted(
                    conn, instance_id=instance_id, provider_volume_id=volume_id
                )
        elif action is VolumeAction.MARK_DETACHED:
            async with pool.acquire() as conn:
                await queries.instance_volumes.mark_volume_detached(
                    conn, instance_id=instance_id, provider_volume_id=volume_id
                )
    return False


async def _finish(rt: Runtime, work: InstanceWork, **metadata: Any) -> Pass:
    async with rt.pool.acquire() as conn:
        await queries.instances.finish_instance_release(conn, instance_id=work.id)
    released = StepFailed("INSTANCE_RELEASED", "released before its worker was ready")
    await action_log.close_span(rt.pool, work.id, ActionType.HEALTH_CHECK, released)
    await action_log.close_span(rt.pool, work.id, _SPAN[work.status], **metadata)
    await rt.workers_changed(work.id)
    log.info("instance released", extra={"instance_id": work.id, "status": work.status, **metadata})
    return Pass(InstanceStatus.TERMINATED if work.status == InstanceStatus.TERMINATING else work.status, 0.0)


_PERFORM: dict[ReleaseStep, Callable[[_Context, _View], Awaitable[bool]]] = {
    ReleaseStep.TRACK_VOLUMES: _track_volumes,
    ReleaseStep.DETACH_KEPT: _detach_kept,
    ReleaseStep.TERMINATE: _terminate,
    ReleaseStep.SETTLE_VOLUMES: _settle_volumes,
}
