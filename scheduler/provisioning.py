"""Provisioning: each step of `scheduler.lifecycle` performed against the cloud and recorded.

Every step is idempotent. The server is found by its tags before one is created (a scheduler that died
between creating it and recording its id adopts it on the next pass), the data volume likewise by its
tags and name, and tracking a volume twice changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiopg

from inventiv.action_types import ActionType
from inventiv.statuses import InstanceStatus
from providers.base import GB, InvalidRequest, NotFound, NotReady, Provider, Server, ServerSpec
from scheduler import action_log
from scheduler.boot_image import boot_image_for
from scheduler.create_validation import validation_error
from scheduler.lifecycle import BootingFacts, ProvisioningFacts, Step, next_booting_step, next_provisioning_step
from scheduler.naming import data_volume_name, instance_tag, is_ours, resource_tags, server_name
from scheduler.retry import StepFailed
from scheduler.runtime import Runtime
from scheduler.tracking import track_volume
from scheduler.work import MAX_STEPS_PER_PASS, PROVISIONING_STATUSES, InstanceWork, Pass, load_work
from sql.queries import queries
from worker.engines import engine
from worker.probe import probe_worker

log = logging.getLogger(__name__)


_FAILURES = {
    Step.FAIL_TIMEOUT: ("PROVISIONING_TIMEOUT", "the instance was not ready before its provisioning deadline"),
    Step.FAIL_SERVER_GONE: ("PROVIDER_SERVER_GONE", "the server disappeared from the cloud while booting"),
    Step.FAIL_SERVER_ERROR: ("PROVIDER_SERVER_ERROR", "the cloud reports the server in an error state"),
}


@dataclass
class _Context:
    rt: Runtime
    work: InstanceWork
    provider: Provider
    server: Server | None = None

    @property
    def pool(self) -> aiopg.Pool:
        return self.rt.pool

    @property
    def tags(self) -> tuple[str, ...]:
        return resource_tags(self.rt.settings.deployment_tag, self.work.id)

    @property
    def server_id(self) -> str:
        assert self.work.provider_instance_id is not None
        return self.work.provider_instance_id


async def advance(rt: Runtime, work: InstanceWork) -> Pass:
    """Take provisioning steps until the instance must wait, is ready, or left provisioning."""
    ctx = _Context(rt, work, rt.providers.get(work.provider_code))
    stepped = False
    for _ in range(MAX_STEPS_PER_PASS):
        step = await _decide(ctx)
        if step in _FAILURES:
            raise StepFailed(*_FAILURES[step])
        if step is Step.WAIT or await _PERFORM[step](ctx):
            if ctx.work.status not in PROVISIONING_STATUSES:
                return Pass(ctx.work.status, rt.settings.scheduler_tick_s)
            delay = ctx.work.wait_delay_s(rt.settings, stepped=stepped)
            return Pass(ctx.work.status, delay, waiting=True, stepped=stepped)
        stepped = True
        reloaded = await load_work(rt.pool, rt.settings, work.id)
        if reloaded is None or reloaded.status not in PROVISIONING_STATUSES:
            return Pass(reloaded.status if reloaded else work.status, 0.0)
        ctx.work = reloaded
    return Pass(ctx.work.status, 0.0)


async def _decide(ctx: _Context) -> Step:
    work = ctx.work
    if work.status == InstanceStatus.PROVISIONING:
        data = work.data_volume
        return next_provisioning_step(
            ProvisioningFacts(
                deadline_passed=work.deadline_passed,
                has_server=work.provider_instance_id is not None,
                boot_volume_tracked=work.boot_volume_tracked,
                data_volume_gb=work.planned_data_volume_gb(ctx.rt.settings),
                data_volume_tracked=data is not None,
                data_volume_attached=data is not None and data.attached_at is not None,
            )
        )
    ctx.server = await ctx.provider.get_server(work.zone_code, ctx.server_id)
    return next_booting_step(
        BootingFacts(
            deadline_passed=work.deadline_passed,
            server_state=ctx.server.state if ctx.server else None,
            server_ip=ctx.server.ip_address if ctx.server else None,
            address_recorded=ctx.server is not None
            and work.ip_address == ctx.server.ip_address
            and work.worker_port == _worker_port(work, ctx.server),
        )
    )


def _worker_port(work: InstanceWork, server: Server) -> int:
    # The cloud's port wins: the mock cloud's workers listen on whatever local port was free.
    return server.worker_port or work.worker_port or work.type_worker_port


# -- steps: each returns True when the pass should stop here (waiting, or done) -------------------------


async def _create_server(ctx: _Context) -> bool:
    rt, work = ctx.rt, ctx.work
    async with action_log.logged(rt.pool, work.id, ActionType.EXECUTE_CREATE) as action:
        failure = validation_error(work)
        if failure is not None:
            raise failure
        size_gb = work.planned_data_volume_gb(rt.settings)
        if size_gb != work.data_volume_gb:
            async with rt.pool.acquire() as conn:
                await queries.instances.set_instance_data_volume_gb(conn, instance_id=work.id, data_volume_gb=size_gb)
        image = await boot_image_for(rt, work, ctx.provider)
        action.metadata.update(data_volume_gb=size_gb, boot_image=image)
    async with action_log.logged(
        rt.pool, work.id, ActionType.PROVIDER_CREATE, zone=work.zone_code, commercial_type=work.instance_type_code
    ) as action:
        server = await _adopt_server(ctx)
        action.metadata["adopted"] = server is not None
        if server is None:
            server = await ctx.provider.create_server(await _server_spec(ctx, image))
        async with rt.pool.acquire() as conn:
            await queries.instances.record_instance_server(
                conn, instance_id=work.id, provider_instance_id=server.id, provider_instance_name=server.name
            )
        action.metadata.update(server_id=server.id, server_name=server.name)
    return False


async def _adopt_server(ctx: _Context) -> Server | None:
    """The server an earlier pass created for this instance, if any; duplicates are terminated."""
    found = await ctx.provider.list_servers(ctx.work.zone_code, ctx.tags)
    if not found:
        return None
    found.sort(key=lambda s: (s.created_at is None, s.created_at, s.id))
    keep, extra = found[0], found[1:]
    for duplicate in extra:
        async with action_log.logged(
            ctx.pool, ctx.work.id, ActionType.PROVIDER_TERMINATE, server_id=duplicate.id, reason="duplicate"
        ):
            await ctx.provider.terminate_server(ctx.work.zone_code, duplicate.id)
    log.info("adopting an existing server", extra={"instance_id": ctx.work.id, "server_id": keep.id})
    return keep


async def _server_spec(ctx: _Context, image: str | None) -> ServerSpec:
    async with ctx.pool.acquire() as conn:
        await queries.instances.mark_instance_create_requested(conn, instance_id=ctx.work.id)
    work = ctx.work
    return ServerSpec(
        name=server_name(work.id),
        zone=work.zone_code,
        commercial_type=work.instance_type_code,
        tags=ctx.tags,
        image=image,
        model=work.model_hf_repo_id,
        engine=work.engine,
        worker_secret=ctx.rt.secrets.for_instance(work.id),
    )


async def _discover_volumes(ctx: _Context) -> bool:
    rt, work = ctx.rt, ctx.work
    async with action_log.logged(rt.pool, work.id, ActionType.DISCOVER_VOLUMES, server_id=ctx.server_id) as action:
        attached = await ctx.provider.list_server_volumes(work.zone_code, ctx.server_id)
        root = next((v for v in attached if v.is_root), None)
        if root is None:
            raise StepFailed("PROVIDER_NO_ROOT_VOLUME", f"server {ctx.server_id} lists no root volume")
        # Tag first: once the boot volume is tracked this step never runs again, and untagged it would be
        # invisible to the orphan sweep. A volume that cannot carry tags (local disk) dies with its server.
        try:
            await ctx.provider.set_volume_tags(work.zone_code, root.id, ctx.tags)
            action.metadata["boot_volume_tagged"] = True
        except (InvalidRequest, NotFound) as exc:
            action.metadata.update(boot_volume_tagged=False, tag_error=exc.message)
        async with rt.pool.acquire() as conn:
            for volume in attached:
                # Volumes that came with the server (root, local scratch) go with it.
                await track_volume(conn, work.id, volume, delete_on_terminate=True)
        action.metadata["volumes"] = [
            {"id": v.id, "slot": v.slot, "type": v.volume_type, "size_bytes": v.size_bytes} for v in attached
        ]
    return False


async def _create_data_volume(ctx: _Context) -> bool:
    rt, work = ctx.rt, ctx.work
    size_gb = work.planned_data_volume_gb(rt.settings)
    name = data_volume_name(work.id)
    async with action_log.logged(
        rt.pool, work.id, ActionType.PROVIDER_CREATE_VOLUME, size_gb=size_gb, name=name
    ) as action:
        # A volume created by a pass that died before recording it carries our tags and name: adopt it.
        tagged = await ctx.provider.list_volumes(work.zone_code, [instance_tag(work.id)])
        existing = [v for v in tagged if v.name == name and is_ours(v.tags, rt.settings.deployment_tag)]
        volume = (
            existing[0] if existing else await ctx.provider.create_volume(work.zone_code, name, size_gb * GB, ctx.tags)
        )
        async with rt.pool.acquire() as conn:
            await track_volume(conn, work.id, volume, delete_on_terminate=work.data_volume_delete_on_terminate)
        action.metadata.update(volume_id=volume.id, adopted=bool(existing))
    return False


async def _attach_data_volume(ctx: _Context) -> bool:
    rt, work = ctx.rt, ctx.work
    data = work.data_volume
    assert data is not None
    volume_id = data.provider_volume_id
    try:
        async with action_log.logged(
            rt.pool, work.id, ActionType.PROVIDER_ATTACH_VOLUME, server_id=ctx.server_id, volume_id=volume_id
        ) as action:
            try:
                await ctx.provider.attach_volume(work.zone_code, ctx.server_id, volume_id)
            except InvalidRequest:
                # A retried attach whose first reply was lost is refused as "already attached": look.
                again = await ctx.provider.get_volume(work.zone_code, volume_id)
                if again is None or again.server_id != ctx.server_id:
                    raise
                action.metadata["already_attached"] = True
            async with rt.pool.acquire() as conn:
                await queries.instance_volumes.mark_volume_attached(
                    conn, instance_id=work.id, provider_volume_id=volume_id
                )
    except NotReady:
        return True  # still being created: wait for it, it is not a failure
    except NotFound:
        # Gone before it was ever attached: forget it, and the next step creates another.
        async with rt.pool.acquire() as conn:
            await queries.instance_volumes.mark_volume_deleted(conn, instance_id=work.id, provider_volume_id=volume_id)
    return False


async def _power_on(ctx: _Context) -> bool:
    rt, work = ctx.rt, ctx.work
    async with action_log.logged(rt.pool, work.id, ActionType.PROVIDER_START, server_id=ctx.server_id):
        await ctx.provider.power_on(work.zone_code, ctx.server_id)
        async with rt.pool.acquire() as conn:
            await queries.instances.mark_instance_booting(conn, instance_id=work.id)
    return False


async def _record_address(ctx: _Context) -> bool:
    rt, work, server = ctx.rt, ctx.work, ctx.server
    assert server is not None and server.ip_address is not None
    port = _worker_port(work, server)
    async with rt.pool.acquire() as conn:
        await queries.instances.record_instance_address(
            conn, instance_id=work.id, ip_address=server.ip_address, worker_port=port
        )
    await action_log.record(
        rt.pool, work.id, ActionType.PROVIDER_ADDRESS,
        server_id=server.id, ip_address=server.ip_address, worker_port=port,
    )
    await rt.workers_changed(work.id)
    return False


async def _health_check(ctx: _Context) -> bool:
    rt, work = ctx.rt, ctx.work
    assert work.ip_address is not None and work.worker_port is not None
    address = f"{work.ip_address}:{work.worker_port}"
    span = await action_log.open_span(rt.pool, work.id, ActionType.HEALTH_CHECK, address=address)
    probe = await probe_worker(
        rt.http, work.ip_address, work.worker_port, rt.settings.health_timeout_s, rt.secrets.authorization(work.id),
        engine(work.engine).queue_gauges,
    )  # fmt: skip
    if not probe.serves(work.model_hf_repo_id):
        return True
    model = probe.served_model(work.model_hf_repo_id)
    async with rt.pool.acquire() as conn:
        await queries.instances.mark_instance_ready(
            conn, instance_id=work.id, worker_model_id=model, worker_queue_depth=probe.queue_depth or 0
        )
    span.metadata.update(model=model, queue_depth=probe.queue_depth)
    await action_log.finish(rt.pool, span)
    await rt.workers_changed(work.id)
    log.info("instance ready", extra={"instance_id": work.id, "model": model})
    ctx.work = await load_work(rt.pool, rt.settings, work.id) or work
    return True


_PERFORM: dict[Step, Callable[[_Context], Awaitable[bool]]] = {
    Step.CREATE_SERVER: _create_server,
    Step.DISCOVER_VOLUMES: _discover_volumes,
    Step.CREATE_DATA_VOLUME: _create_data_volume,
    Step.ATTACH_DATA_VOLUME: _attach_data_volume,
    Step.POWER_ON: _power_on,
    Step.RECORD_ADDRESS: _record_address,
    Step.HEALTH_CHECK: _health_check,
}
