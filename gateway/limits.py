"""Rate limits per API key and per organization: requests and tokens per minute, concurrent requests.

A request must pass its key's limits and its organization's (either may be unset: NULL, unlimited).
Windows are calendar minutes (fixed windows, reset at second 0 of each minute, UTC clock of the gateway).

- Requests per minute: requests admitted in the current minute; a refused request is not counted.
- Tokens per minute: total tokens (prompt + completion, as the worker reported them, or the estimate of
  a cut stream) charged when each request ends; a request is admitted while the minute's count is below
  the limit, so one request may overshoot it by its own size and the next ones wait for the next minute.
- Concurrent requests: inference requests in flight, streamed or not, counted in Redis across every
  gateway process. Each holds a slot that expires after `_SLOT_TTL_S`, so a gateway that crashed
  cannot leak slots for longer than that (a request running longer stops counting then).

Cost: a key with no limit on itself nor its organization costs nothing here. A limited one costs one
Redis round trip before it is forwarded (one Lua script checks and counts key and organization at once,
atomically), and its share of a pipelined write once it ends (token charge, slot release): sent in the
background so no answer waits for it, and batched: one pipeline per 10 ms and process at most.

Redis down: each key chooses (`limits_fail_mode`). `open` (the default) serves the request unlimited and
counts it in `inventiv_gateway_limits_unavailable{mode="open"}`; `closed` answers 503. A circuit breaker,
as in gateway/affinity.py, keeps an outage from adding its timeout to every request, and the outage is
logged once per breaker window, not per request.

Answers of limited keys carry OpenAI's headers (https://platform.openai.com/docs/guides/rate-limits,
"Rate limits in headers"): x-ratelimit-limit-requests, -remaining-requests, -reset-requests and the same
three for tokens, the reset as a duration such as "1s" or "6m0s". Where both key and organization set a
limit, the headers show the one with less remaining. A refusal is a 429 with `Retry-After` in seconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from gateway import metrics
from gateway.errors import ApiError
from inventiv import redis_keys
from inventiv.settings import Settings

log = logging.getLogger(__name__)

WINDOW_S = 60
# Counters outlive their minute by one more, so a late token charge still finds the right key.
_COUNTER_TTL_S = 2 * WINDOW_S
# A slot outlives any request we expect (generations run minutes); past this a crashed gateway's
# slots are free again.
_SLOT_TTL_S = 900
# Loopback Redis answers in well under a millisecond; past this it is in trouble (as in affinity.py).
_TIMEOUT_S = 0.25
# After a failure, skip Redis this long: one slow request per second instead of every request.
_BREAKER_S = 1.0
# Ended requests are settled in one pipeline per this interval and process, not one per request: a slot
# freed 10 ms late is invisible next to a generation's seconds, and a round trip per request doubled the
# limits' CPU cost (benchmarks/limits_cost.py).
_SETTLE_EVERY_S = 0.01
# A refusal for concurrency has no window to wait for: a slot frees when any request ends.
_CONCURRENCY_RETRY_S = 1

FAIL_MODES = ("open", "closed")


@dataclass(frozen=True, slots=True)
class Rates:
    """One scope's limits; None: unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.requests_per_minute, self.tokens_per_minute, self.concurrent_requests))

    def as_args(self) -> tuple[int, int, int]:
        """For the script: 0 means unlimited."""
        return (self.requests_per_minute or 0, self.tokens_per_minute or 0, self.concurrent_requests or 0)


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What a key's requests are held to: its own rates, its organization's, and what to do without Redis."""

    key: Rates
    org: Rates
    fail_closed: bool = False


def key_limits_from_row(row: Mapping[str, Any]) -> KeyLimits | None:
    """From a `list-active-api-keys` row; None when neither the key nor its organization sets a limit."""
    key = Rates(row.get("requests_per_minute"), row.get("tokens_per_minute"), row.get("concurrent_requests"))
    org = Rates(row.get("org_requests_per_minute"), row.get("org_tokens_per_minute"),
                row.get("org_concurrent_requests"))
    if not (key.any or org.any):
        return None
    return KeyLimits(key=key, org=org, fail_closed=row.get("limits_fail_mode") == "closed")


@dataclass(frozen=True, slots=True)
class Used:
    """One scope's counts before this request: requests and tokens in the minute, requests in flight."""

    requests: int = 0
    tokens: int = 0
    in_flight: int = 0


# Pure decisions --------------------------------------------------------------------------------------


def exceeded(rates: Rates, used: Used) -> str | None:
    """The limit a new request would break ('requests', 'tokens', 'concurrency'), or None.

    `_ADMIT` (the Lua script) applies this same rule inside Redis, where it is atomic.
    """
    if rates.requests_per_minute is not None and used.requests >= rates.requests_per_minute:
        return "requests"
    if rates.tokens_per_minute is not None and used.tokens >= rates.tokens_per_minute:
        return "tokens"
    if rates.concurrent_requests is not None and used.in_flight >= rates.concurrent_requests:
        return "concurrency"
    return None


def window_of(now: float) -> tuple[int, float]:
    """The minute's index and the seconds until it ends."""
    return int(now // WINDOW_S), WINDOW_S - now % WINDOW_S


def duration(seconds: float) -> str:
    """A reset time the way OpenAI writes it: "20ms", "1s", "6m0s"."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def rate_headers(limits: KeyLimits, key: Used, org: Used, admitted: bool, reset_s: float) -> dict[str, str]:
    """x-ratelimit-* for requests and tokens, from the scope with less remaining; none for unset limits.

    Remaining requests count this request when it was admitted.
    """
    headers: dict[str, str] = {}
    taken = 1 if admitted else 0
    scopes = ((limits.key, key), (limits.org, org))
    requests = [(r.requests_per_minute, r.requests_per_minute - u.requests - taken)
                for r, u in scopes if r.requests_per_minute is not None]
    tokens = [(r.tokens_per_minute, r.tokens_per_minute - u.tokens)
              for r, u in scopes if r.tokens_per_minute is not None]
    for kind, candidates in (("requests", requests), ("tokens", tokens)):
        if candidates:
            limit, remaining = min(candidates, key=lambda c: c[1])
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, remaining))
            headers[f"x-ratelimit-reset-{kind}"] = duration(reset_s)
    return headers


def refusal(limits: KeyLimits, key: Used, org: Used, reset_s: float) -> RateLimited | None:
    """The 429 for a request the counts refuse, naming the scope and the limit; None if admitted."""
    for scope, rates, used in (("key", limits.key, key), ("organization", limits.org, org)):
        broken = exceeded(rates, used)
        if broken is None:
            continue
        headers = rate_headers(limits, key, org, False, reset_s)
        if broken == "concurrency":
            message = (f"Too many concurrent requests for this API {scope}: limit {rates.concurrent_requests}. "
                       "Retry when one of them has finished.")
            retry = _CONCURRENCY_RETRY_S
        else:
            limit = rates.requests_per_minute if broken == "requests" else rates.tokens_per_minute
            message = (f"Rate limit reached for this API {scope}: {limit} {broken} per minute. "
                       f"Retry in {math.ceil(reset_s)} s.")
            retry = math.ceil(reset_s)
        return RateLimited(message, {**headers, "Retry-After": str(retry)}, scope, broken)
    return None


class RateLimited(ApiError):
    """A 429 carrying its Retry-After and x-ratelimit-* headers."""

    def __init__(self, message: str, headers: dict[str, str], scope: str, limit: str) -> None:
        super().__init__(429, message, "rate_limit_exceeded")
        self.headers = headers
        self.scope = scope
        self.limit = limit

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        return super().response({**(headers or {}), **self.headers})


# Redis -----------------------------------------------------------------------------------------------

# Redis runs a script atomically: no other command runs between its reads and its writes
# (https://redis.io/docs/latest/develop/interact/programmability/eval-intro/), so two gateways cannot
# both take the last unit. KEYS, per scope (key, then organization): requests counter, tokens counter,
# slots sorted set (member: request id, score: expiry). ARGV: now, counter TTL, slot TTL, request id,
# then per scope rpm, tpm, concurrency (0: unlimited). Reply: 1 or 0 (admitted), then per scope the
# requests, tokens and slots counted before this request.
_ADMIT = """
local now = tonumber(ARGV[1])
local used = {}
local admitted = 1
for i = 0, #KEYS / 3 - 1 do
  local rpm, tpm, conc = tonumber(ARGV[5 + 3 * i]), tonumber(ARGV[6 + 3 * i]), tonumber(ARGV[7 + 3 * i])
  local requests, tokens, slots = 0, 0, 0
  if rpm > 0 then requests = tonumber(redis.call('GET', KEYS[1 + 3 * i]) or '0') end
  if tpm > 0 then tokens = tonumber(redis.call('GET', KEYS[2 + 3 * i]) or '0') end
  if conc > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3 + 3 * i], '-inf', now)
    slots = redis.call('ZCARD', KEYS[3 + 3 * i])
  end
  if (rpm > 0 and requests >= rpm) or (tpm > 0 and tokens >= tpm) or (conc > 0 and slots >= conc) then
    admitted = 0
  end
  table.insert(used, requests)
  table.insert(used, tokens)
  table.insert(used, slots)
end
if admitted == 1 then
  for i = 0, #KEYS / 3 - 1 do
    if tonumber(ARGV[5 + 3 * i]) > 0 then
      redis.call('INCR', KEYS[1 + 3 * i])
      redis.call('EXPIRE', KEYS[1 + 3 * i], ARGV[2])
    end
    if tonumber(ARGV[7 + 3 * i]) > 0 then
      redis.call('ZADD', KEYS[3 + 3 * i], now + tonumber(ARGV[3]), ARGV[4])
      redis.call('EXPIRE', KEYS[3 + 3 * i], ARGV[3])
    end
  end
end
table.insert(used, 1, admitted)
return used
"""


@dataclass(frozen=True, slots=True)
class Admission:
    """An admitted request: the headers its answer carries and what to settle when it ends."""

    headers: dict[str, str]
    # (scope's key prefix, whether tokens are charged, whether a slot is held) for each scope with a limit.
    scopes: tuple[tuple[str, bool, bool], ...]
    member: str


class LimitsUnavailable(ApiError):
    def __init__(self) -> None:
        super().__init__(503, "Rate limits cannot be checked right now and this API key is set to refuse "
                         "requests then (limits_fail_mode 'closed'); retry shortly.", "limits_unavailable")


class Limiter:
    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self._redis = redis
        self._prefix = settings.redis_prefix
        self._script = redis.register_script(_ADMIT)
        self._down_until = 0.0
        # Ended requests whose tokens and slots are not yet written, and the task writing them.
        self._owed: list[tuple[Admission, int]] = []
        self._settling: asyncio.Task[None] | None = None
        # Where windows and slot expiries take their time from (tests pin it inside one minute).
        self.clock: Callable[[], float] = time.time

    def _scope(self, scope: str, scope_id: str) -> str:
        return self._prefix + redis_keys.LIMITS.format(scope=scope, id=scope_id)

    async def admit(self, key_id: str, organization_id: str, limits: KeyLimits, member: str) -> Admission | None:
        """Count the request in; RateLimited (429) when a limit refuses it, LimitsUnavailable (503) when
        Redis is down for a fail-closed key; None when Redis is down for a fail-open one."""
        now = self.clock()
        minute, reset_s = window_of(now)
        # Only the scopes that set a limit go to Redis; the reply then holds their counts only.
        scopes = [(self._scope("key", key_id), limits.key)] if limits.key.any else []
        if limits.org.any:
            scopes.append((self._scope("org", organization_id), limits.org))
        keys = [k for prefix, _ in scopes for k in (f"{prefix}:requests:{minute}", f"{prefix}:tokens:{minute}",
                                                    f"{prefix}:slots")]
        args: list[float | int | str] = [now, _COUNTER_TTL_S, _SLOT_TTL_S, member]
        args += [v for _, rates in scopes for v in rates.as_args()]
        reply = await self._call(keys, args, limits)
        if reply is None:
            return None
        admitted = bool(reply[0])
        counts = iter(reply[1:])
        key_used = Used(next(counts), next(counts), next(counts)) if limits.key.any else Used()
        org_used = Used(next(counts), next(counts), next(counts)) if limits.org.any else Used()
        if not admitted:
            refused = refusal(limits, key_used, org_used, reset_s)
            assert refused is not None, "the script and exceeded() apply one rule"
            metrics.rate_limited(refused.scope, refused.limit).inc()
            raise refused
        return Admission(
            headers=rate_headers(limits, key_used, org_used, True, reset_s),
            scopes=tuple((prefix, rates.tokens_per_minute is not None, rates.concurrent_requests is not None)
                         for prefix, rates in scopes),
            member=member,
        )

    async def _call(self, keys: list[str], args: list[float | int | str], limits: KeyLimits) -> list[int] | None:
        if time.monotonic() >= self._down_until:
            try:
                async with asyncio.timeout(_TIMEOUT_S):
                    return [int(v) for v in await self._script(keys=keys, args=args)]
            except (RedisError, OSError, TimeoutError) as exc:
                self._down_until = time.monotonic() + _BREAKER_S
                log.warning("rate limits unavailable: fail-open keys are served unlimited, fail-closed keys refused",
                            extra={"error": str(exc) or type(exc).__name__})
        mode = "closed" if limits.fail_closed else "open"
        metrics.limits_unavailable(mode).inc()
        if limits.fail_closed:
            raise LimitsUnavailable()
        return None

    def settle(self, admission: Admission, tokens: int) -> None:
        """Charge the request's tokens and free its slot, in the background: no answer waits for it.

        Settlements are gathered for `_SETTLE_EVERY_S`, and those that arrive while a batch is being
        written go together in the next: one pipeline for many requests.
        """
        self._owed.append((admission, tokens))
        if self._settling is None or self._settling.done():
            self._settling = asyncio.get_running_loop().create_task(self._settle_owed())

    async def _settle_owed(self) -> None:
        await asyncio.sleep(_SETTLE_EVERY_S)
        while self._owed:
            owed, self._owed = self._owed, []
            charges, releases = settlement(owed, window_of(self.clock())[0])
            pipe = self._redis.pipeline(transaction=False)
            for key, tokens in charges.items():
                pipe.incrby(key, tokens)
                pipe.expire(key, _COUNTER_TTL_S)
            for key, members in releases.items():
                pipe.zrem(key, *members)
            if not pipe.command_stack:
                continue
            try:
                async with asyncio.timeout(_TIMEOUT_S):
                    await pipe.execute()
            except (RedisError, OSError, TimeoutError) as exc:
                # The slots expire by themselves (_SLOT_TTL_S); the tokens go uncounted.
                log.debug("rate limit settlement lost", extra={"error": str(exc) or type(exc).__name__})

    async def flush(self) -> None:
        """Wait until every settlement owed is written (tests; shutdown)."""
        while self._settling is not None and not self._settling.done():
            await self._settling


def settlement(owed: list[tuple[Admission, int]], minute: int) -> tuple[dict[str, int], dict[str, list[str]]]:
    """What a batch of ended requests owes Redis: tokens per counter key, slot members per set key."""
    charges: dict[str, int] = {}
    releases: dict[str, list[str]] = {}
    for admission, tokens in owed:
        for prefix, charges_tokens, holds_slot in admission.scopes:
            if charges_tokens and tokens > 0:
                key = f"{prefix}:tokens:{minute}"
                charges[key] = charges.get(key, 0) + tokens
            if holds_slot:
                releases.setdefault(f"{prefix}:slots", []).append(admission.member)
    return charges, releases
