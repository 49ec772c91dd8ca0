"""Every Redis key, stream and channel the system uses, with its TTL, in one place.

All names are relative: `key(settings, NAME)` prefixes them with `settings.redis_prefix`, so several
deployments (or test sessions) share one Redis without seeing each other.
"""

from __future__ import annotations

import enum

import redis.asyncio as aioredis

from inventiv.settings import Settings

# Stream of scheduler commands. Entry fields: type (a SchedulerCommand), instance_id, requested_at.
# Commands only wake the scheduler; Postgres is the truth, so a lost command delays work, never loses it.
SCHEDULER_COMMANDS = "scheduler:commands"


class SchedulerCommand(enum.StrEnum):
    """The `type` of a SCHEDULER_COMMANDS entry: the control API writes it, scheduler/commands.py reads it."""

    PROVISION = "PROVISION"  # a deployment was asked for
    TERMINATE = "TERMINATE"  # an instance was asked to go


SCHEDULER_GROUP = "scheduler"
# Bounded so a scheduler that is down for days cannot grow Redis without limit (approximate trim).
SCHEDULER_COMMANDS_MAXLEN = 100_000

# Stream of usage records (one per inference request), consumed by the gateways' usage writers.
USAGE_STREAM = "usage:records"
USAGE_GROUP = "usage-writers"

# Session pin: affinity:{org}:{model}:{session} -> instance id, sliding TTL (Settings.affinity_ttl_s).
# Session ids are chosen by clients: the organization in the key keeps two tenants that pick the same
# id from sharing (or moving) each other's pin.
AFFINITY = "affinity:{org}:{model}:{session}"

# Rate limits of one scope (key or org, by id): {LIMITS}:requests:{minute} and :tokens:{minute}, counters
# that expire after two minutes, and :in_flight, a hash of each gateway process's requests in flight,
# stamped (gateway/limits.py has the TTLs).
LIMITS = "limits:{scope}:{id}"

# A console sign-in: console:session:{digest} -> the session (JSON), sliding TTL
# (Settings.console_session_ttl_s). The digest is the SHA-256 of the cookie's value, so reading Redis
# gives no one a usable cookie.
CONSOLE_SESSION = "console:session:{digest}"
# Hash of the playground's inference keys: key id -> the session it was minted for (JSON). A key whose
# session expired is revoked by the next sweep (gateway/console/playground.py); no TTL: the entry goes
# with its key.
CONSOLE_PLAYGROUND_KEYS = "console:playground-keys"

# Pub/sub channels that push changes to every gateway process at once (polling still backs them up).
WORKERS_CHANGED = "events:workers"
KEYS_CHANGED = "events:keys"


def key(settings: Settings, name: str) -> str:
    return settings.redis_prefix + name


async def delete_prefix(redis: aioredis.Redis, prefix: str) -> None:
    """Delete every key under `prefix` (a test session's or a benchmark run's)."""
    keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await redis.delete(*keys)
