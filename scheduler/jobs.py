"""The scheduler's interval jobs, registered on the daemon."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiopg
import redis.asyncio as aioredis

if TYPE_CHECKING:
    from scheduler.daemon import Daemon


async def register_jobs(daemon: Daemon, pool: aiopg.Pool, redis: aioredis.Redis) -> None:
    """Register every interval job on the daemon (none yet: provisioning lands with the providers)."""
