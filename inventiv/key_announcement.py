"""Tell running gateways that a key (or its organization's limits) changed, as the key API does."""

from __future__ import annotations

import sys

from redis.exceptions import RedisError

from inventiv import redis_keys
from inventiv.services import redis_client
from inventiv.settings import Settings


async def announce_key(settings: Settings, key_id: str) -> None:
    """Make running gateways load the new key now, as POST /api_keys does, not at their next refresh.

    Best effort: the key is stored and printed already, and gateways find it by polling anyway.
    """
    client = redis_client(settings)
    try:
        await client.publish(redis_keys.key(settings, redis_keys.KEYS_CHANGED), key_id)
    except (RedisError, OSError) as exc:
        print(f"inventiv: warning: running gateways were not notified ({exc}); "
              f"they accept the key within {settings.routing_refresh_s:g} s", file=sys.stderr)
    finally:
        await client.aclose()
