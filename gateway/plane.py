"""The data plane's in-memory state and how it is kept fresh.

Every gateway process holds: the API key table, the model catalog and the ready-worker view. One
background task reloads all three from Postgres every `routing_refresh_s` (1 s), and at once when a
change is published on Redis (`events:workers` by the scheduler and heartbeats, `events:keys` by the
key API). A request never waits on Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiopg
import redis.asyncio as aioredis

from gateway import metrics
from gateway.affinity import Affinity
from gateway.auth import KeyTable
from gateway.hot_metrics import HotMetrics
from gateway.lifecycle import Lifecycle
from gateway.limits import Limiter
from gateway.model_resolution import Catalog
from gateway.tracing import AccessSink
from gateway.upstream import UpstreamPool
from gateway.usage_recorder import UsageRecorder
from gateway.workers import WorkerView, worker_from_row
from inventiv import redis_keys
from inventiv.cancellation import being_cancelled
from inventiv.settings import Settings
from inventiv.worker_secrets import WorkerSecrets
from sql.queries import fetch_all, queries

log = logging.getLogger(__name__)

# Pause before re-subscribing after Redis pub/sub failed; polling keeps the view fresh meanwhile.
_RESUBSCRIBE_S = 2.0


# Routing table groups with a version in routing_versions (migration 0014).
KEYS = "keys"
CATALOG = "catalog"


def stale(built: Mapping[str, int], current: Mapping[str, int], group: str) -> bool:
    """Whether a table group must be refetched: its version moved since it was built, or is unknown (a
    database without the row refetches every time, as before versions existed)."""
    return group not in current or built.get(group) != current[group]


@dataclass
class DataPlane:
    settings: Settings
    keys: KeyTable
    lifecycle: Lifecycle
    affinity: Affinity
    usage: UsageRecorder
    upstream: UpstreamPool
    workers: WorkerView
    secrets: WorkerSecrets
    limits: Limiter
    # Where each inference request's access line goes; None: the access log is off (gateway/tracing.py).
    access: AccessSink | None = None
    catalog: Catalog = field(default_factory=Catalog)
    # The per-request metrics, folded into prometheus_client every second and at each scrape.
    hot: HotMetrics = field(default_factory=HotMetrics)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    # The routing_versions the key table and catalog were built from (empty: not built yet).
    _versions: dict[str, int] = field(default_factory=dict)

    async def reload(self, pool: aiopg.Pool) -> None:
        """Refetch the worker view, and the key table and catalog when their version moved (or is unknown).

        The versions are read first: a change committed after that read moves the version again, so the
        next refresh refetches; none is missed.
        """
        async with pool.acquire() as conn:
            rows = await fetch_all(queries.routing.routing_versions(conn))
            versions = {str(r["name"]): int(r["version"]) for r in rows}
            keys = models = offerings = None
            if stale(self._versions, versions, KEYS):
                keys = await fetch_all(queries.api_keys.list_active_api_keys(conn))
            if stale(self._versions, versions, CATALOG):
                models = await fetch_all(queries.models.list_models_for_routing(conn))
                offerings = await fetch_all(queries.offerings.list_offerings_for_routing(conn))
            workers = await fetch_all(queries.instances.list_routable_workers(conn))
        if keys is not None:
            self.keys.replace(keys)
        if models is not None and offerings is not None:
            self.catalog = Catalog.from_rows(models, offerings)
        self._versions = versions
        previous = self.workers.by_id
        for instance_id in self.workers.replace(worker_from_row(row, self.secrets) for row in workers):
            log.info("worker left the routing table", extra={"instance_id": instance_id})
            self.hot.forget([instance_id])
            metrics.forget_instance(instance_id)
            # Its idle keep-alive connections would only fail a later request (or reach a new tenant
            # of the address): close them now.
            gone = previous[instance_id]
            self.upstream.forget(gone.host, gone.port)

    def changed(self) -> None:
        """Reload now rather than at the next interval."""
        self._wake.set()

    async def refresh_forever(self, pool: aiopg.Pool) -> None:
        every = self.settings.routing_refresh_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.reload(pool)
            except Exception as exc:
                if being_cancelled():
                    raise asyncio.CancelledError from exc
                # Keep routing on the last tables: a database blip must not stop inference.
                log.warning("routing tables refresh failed; keeping the previous ones", extra={"error": str(exc)})

    async def listen_forever(self, redis: aioredis.Redis) -> None:
        channels = [redis_keys.key(self.settings, c) for c in (redis_keys.WORKERS_CHANGED, redis_keys.KEYS_CHANGED)]
        while True:
            try:
                async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(*channels)
                    async for _message in pubsub.listen():
                        self.changed()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if being_cancelled():
                    raise asyncio.CancelledError from exc
                log.warning("change notifications unavailable; polling only", extra={"error": str(exc)})
                await asyncio.sleep(_RESUBSCRIBE_S)
