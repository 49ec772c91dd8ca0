"""Whether the Redis holding usage records keeps them across its own restart, checked at gateway start.

Records wait in the Redis stream until a usage writer has put them in Postgres (up to half a second,
or the whole of a Postgres outage). A Redis with neither an append-only file nor snapshots loses them
all when it restarts: one measured lost 97 finished requests' records that way. The gateway says so.
"""

from __future__ import annotations

import logging

import redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# How long the start waits for the check; a Redis that slow is the next problem the gateway reports.
_TIMEOUT_S = 2.0


def persistence_risk(appendonly: str, save: str) -> str | None:
    """The warning for a Redis whose `appendonly` and `save` settings are these, or None.

    `save ""` (an empty list of save points) turns snapshots off; `appendonly yes` turns the AOF on
    (https://redis.io/docs/latest/operate/oss_and_stack/management/persistence/, and redis.conf).
    """
    if appendonly.strip().lower() == "yes" or save.strip():
        return None
    return (
        "Redis runs with neither an append-only file nor snapshots (appendonly no, save \"\"): usage records "
        "waiting in its stream for Postgres are lost if Redis restarts; turn on appendonly"
    )


def check_persistence(url: str) -> None:
    """Log a warning when the Redis at `url` keeps nothing across a restart.

    CONFIG is often refused on managed Redis (renamed or left out of the ACL: it is @admin,
    https://redis.io/commands/config-get): then only that it could not be checked, at INFO.
    """
    client = redis.Redis.from_url(url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S)
    try:
        appendonly = client.config_get("appendonly").get("appendonly", "no")
        save = client.config_get("save").get("save", "")
    except RedisError as exc:
        log.info("could not check whether Redis persists its data", extra={"error": str(exc)})
        return
    finally:
        client.close()
    risk = persistence_risk(str(appendonly), str(save))
    if risk is not None:
        log.warning(risk)
