"""Best-effort Redis writes that wake other processes: scheduler commands and change events.

Postgres is the truth for all of them. A command only wakes the scheduler early (its interval driver
finds the row anyway) and an event only makes gateways refresh before their next poll, so a Redis
outage is logged and the request still succeeds.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from inventiv import redis_keys
from inventiv.redis_keys import SchedulerCommand
from inventiv.settings import Settings

log = logging.getLogger(__name__)


async def send_scheduler_command(
    client: aioredis.Redis, settings: Settings, command: SchedulerCommand, instance_id: str
) -> bool:
    """XADD one command to the scheduler's stream; False (and a warning) when Redis is unreachable."""
    fields: dict[FieldT, EncodableT] = {
        "type": command,
        "instance_id": instance_id,
        "requested_at": datetime.now(UTC).isoformat(),
    }
    try:
        await client.xadd(
            redis_keys.key(settings, redis_keys.SCHEDULER_COMMANDS),
            fields,
            maxlen=redis_keys.SCHEDULER_COMMANDS_MAXLEN,
            approximate=True,
        )
    except (RedisError, OSError):
        log.warning(
            "scheduler command not sent; the scheduler's interval driver will pick the row up",
            extra={"command": command, "instance_id": instance_id},
            exc_info=True,
        )
        return False
    return True


async def publish_change(client: aioredis.Redis, settings: Settings, channel: str, message: str) -> bool:
    """PUBLISH on one of the change channels; False (and a warning) when Redis is unreachable."""
    try:
        await client.publish(redis_keys.key(settings, channel), message)
    except (RedisError, OSError):
        log.warning("change event not published; gateways will see it on their next poll",
                    extra={"channel": channel}, exc_info=True)
        return False
    return True
