"""Rate limits per API key and per organization: requests and tokens per minute, concurrent requests.

A request must pass its key's limits and its organization's (either may be unset: NULL, unlimited).
Windows are calendar minutes (fixed windows, reset at second 0 of each minute, UTC clock of the gateway).

- Requests per minute: requests admitted in the current minute; a refused request is not counted.
- Tokens per minute: total tokens (prompt + completion, as the worker reported them, or the estimate of
  a cut stream) charged when each request ends; a request is admitted while the minute's count is below
  the limit, so one request may overshoot it by its own size and the next ones wait for the next minute.
- Concurrent requests: inference requests in flight, streamed or not, across every gateway process.

How it counts: each gateway process counts its own requests and decides at once, from every process's
counts as of the last sync plus its own since. Every `_SYNC_EVERY_S` (50 ms) one Redis pipeline pushes
what the process counted (INCRBY on the minute's counters; its in-flight count, stamped, into a hash per
scope) and reads back everyone's totals. So a limited request costs no Redis round trip on its path
(the first one of a scope in a process waits for one sync); the price is that each process may overshoot
a shared limit by what it admits in 50 ms. A gateway that crashed stops counting as in flight once its
stamp is `_IN_FLIGHT_FRESH_S` old. A key with no limit on itself nor its organization costs nothing.

Redis down: each key chooses (`limits_fail_mode`). Counts not synced for `_STALE_S` are not trusted:
`open` (the default) then serves the request unlimited and counts it in
`inventiv_gateway_limits_unavailable{mode="open"}`; `closed` answers 503. A circuit breaker, as in
gateway/affinity.py, keeps an outage from adding its timeout to every request, and the outage is logged
once per breaker window, not per request.

Answers of limited keys carry OpenAI's headers (https://platform.openai.com/docs/guides/rate-limits,
"Rate limits in headers"): x-ratelimit-limit-requests, -remaining-requests, -reset-requests and the same
three for tokens, the reset as a duration such as "1s" or "6m0s". Where both key and organization set a
limit, the headers show the one with less remaining. A refusal is a 429 with `Retry-After` in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway import metrics
from gateway.error_codes import ErrorCode
from gateway.errors import ApiError
from inventiv import redis_keys
from inventiv.settings import Settings

log = logging.getLogger(__name__)

WINDOW_S = 60
# Counters outlive their minute by one more, so a late token charge still finds the right key.
_COUNTER_TTL_S = 2 * WINDOW_S
# Each process pushes what it counted and reads everyone's totals this often. A Redis round trip in
# every request doubled the gateway's CPU per request (benchmarks/limits_cost.py); counting locally
# and syncing every 50 ms costs none on the request path, and lets each process overshoot a limit by
# at most what it admits in 50 ms.
_SYNC_EVERY_S = 0.05
# Counts not synced for this long are not trusted: Redis is then treated as down.
_STALE_S = 1.0
# A process's in-flight count, stamped when it was pushed, is ignored by others once this old: a
# gateway that crashed frees its slots within 10 s. Live processes re-push every _SYNC_EVERY_S.
_IN_FLIGHT_FRESH_S = 10.0
# A scope no request used for this long is forgotten by the process (memory stays bounded).
_FORGET_AFTER_S = 2 * WINDOW_S
# Loopback Redis answers in well under a millisecond; past this it is in trouble (as in affinity.py).
_TIMEOUT_S = 0.25
# After a failure, skip Redis this long: one slow request per second instead of every request.
_BREAKER_S = 1.0
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
    """The limit a new request would break ('requests', 'tokens', 'concurrency'), or None."""
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
        super().__init__(429, message, ErrorCode.RATE_LIMIT_EXCEEDED)
        self.headers = headers
        self.scope = scope
        self.limit = limit


# Counting: locally, synchronised with Redis in batches ------------------------------------------------


def others_in_flight(fields: Mapping[bytes, bytes], own: str, now: float) -> int:
    """Requests in flight in the other processes: their fresh `count:stamp` fields of the scope's hash."""
    total = 0
    for process, value in fields.items():
        count, _, stamp = value.decode().partition(":")
        if process.decode() != own and now - float(stamp or 0) < _IN_FLIGHT_FRESH_S:
            total += int(count)
    return total


@dataclass(slots=True)
class Window:
    """One scope's counts as this process sees them: everyone's as of the last sync, plus its own since."""

    prefix: str
    minute: int = -1
    # Every process's counts in `minute`, as Redis had them at the last sync (this process's included).
    requests: int = 0
    tokens: int = 0
    # Admitted (requests) and charged (tokens) here since the last sync; pushed by the next one.
    new_requests: int = 0
    new_tokens: int = 0
    # Requests in flight here now, and in the other processes as of the last sync.
    in_flight: int = 0
    others_in_flight: int = 0
    # Whether a limit on concurrency is set: only then is the in-flight count shared.
    shares_in_flight: bool = False
    synced_at: float = -math.inf
    used_at: float = 0.0

    def roll(self, minute: int) -> None:
        if minute != self.minute:
            self.minute, self.requests, self.tokens, self.new_requests, self.new_tokens = minute, 0, 0, 0, 0

    def used(self) -> Used:
        return Used(self.requests + self.new_requests, self.tokens + self.new_tokens,
                    self.others_in_flight + self.in_flight)


@dataclass(frozen=True, slots=True)
class Admission:
    """An admitted request: the headers its answer carries and the windows it counts in."""

    headers: dict[str, str]
    # One per scope with a limit: key, organization.
    windows: tuple[Window, ...]


class LimitsUnavailable(ApiError):
    def __init__(self) -> None:
        super().__init__(503, "Rate limits cannot be checked right now and this API key is set to refuse "
                         "requests then (limits_fail_mode 'closed'); retry shortly.", ErrorCode.LIMITS_UNAVAILABLE)


class Limiter:
    """The rate limits of one gateway process.

    Requests are counted here and decided on at once; every `_SYNC_EVERY_S` one pipeline pushes what
    this process counted (INCRBY on each minute's counters, its in-flight count into each scope's hash)
    and reads back every process's totals. The first request of a scope in a process waits for one
    sync, so a process never decides on counts it has not seen.
    """

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self._redis = redis
        self._prefix = settings.redis_prefix
        self._windows: dict[str, Window] = {}
        # Names this process's field in the in-flight hashes.
        self._process = os.urandom(8).hex()
        self._down_until = 0.0
        self._syncing: asyncio.Task[None] | None = None
        self._sync_lock = asyncio.Lock()
        # Where windows and in-flight stamps take their time from (tests pin it inside one minute).
        self.clock: Callable[[], float] = time.time

    def _window(self, scope: str, scope_id: str, rates: Rates, minute: int, now: float) -> Window:
        prefix = self._prefix + redis_keys.LIMITS.format(scope=scope, id=scope_id)
        window = self._windows.get(prefix)
        if window is None:
            window = self._windows[prefix] = Window(prefix)
        window.roll(minute)
        window.shares_in_flight = window.shares_in_flight or rates.concurrent_requests is not None
        window.used_at = now
        return window

    async def admit(self, key_id: str, organization_id: str, limits: KeyLimits) -> Admission | None:
        """Count the request in; RateLimited (429) when a limit refuses it, LimitsUnavailable (503) when
        Redis is down for a fail-closed key; None when Redis is down for a fail-open one."""
        now = self.clock()
        minute, reset_s = window_of(now)
        scopes = [(s, i, r) for s, i, r in (("key", key_id, limits.key), ("org", organization_id, limits.org)) if r.any]
        windows = [self._window(s, i, r, minute, now) for s, i, r in scopes]
        if any(time.monotonic() - w.synced_at > _STALE_S for w in windows) and not await self.sync():
            self._unavailable(limits)
            return None
        key_used = windows[0].used() if limits.key.any else Used()
        org_used = windows[-1].used() if limits.org.any else Used()
        refused = refusal(limits, key_used, org_used, reset_s)
        if refused is not None:
            metrics.rate_limited(refused.scope, refused.limit).inc()
            raise refused
        for window in windows:
            window.new_requests += 1
            window.in_flight += 1
        self._keep_syncing()
        return Admission(rate_headers(limits, key_used, org_used, True, reset_s), tuple(windows))

    def settle(self, admission: Admission, tokens: int) -> None:
        """The request ended: charge its tokens, free its slot (Redis hears of both at the next sync)."""
        for window in admission.windows:
            window.new_tokens += tokens
            window.in_flight -= 1

    def _unavailable(self, limits: KeyLimits) -> None:
        mode = "closed" if limits.fail_closed else "open"
        metrics.limits_unavailable(mode).inc()
        if limits.fail_closed:
            raise LimitsUnavailable()

    def _keep_syncing(self) -> None:
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.get_running_loop().create_task(self._sync_forever())

    async def _sync_forever(self) -> None:
        while self._windows:
            await asyncio.sleep(_SYNC_EVERY_S)
            await self.sync(everything=False)
            horizon = self.clock() - _FORGET_AFTER_S
            for prefix in [p for p, w in self._windows.items() if w.used_at < horizon and not w.in_flight]:
                del self._windows[prefix]

    async def sync(self, everything: bool = True) -> bool:
        """Push this process's counts and read everyone's; False when Redis could not be asked.

        everything=False (the periodic sync) leaves out windows with nothing to push and no request in
        the last `_STALE_S`: their next request finds them stale and syncs them first.
        """
        if time.monotonic() < self._down_until:
            return False
        async with self._sync_lock:
            return await self._sync(everything)

    async def _sync(self, everything: bool) -> bool:
        recent = self.clock() - _STALE_S
        windows = [w for w in self._windows.values()
                   if everything or w.new_requests or w.new_tokens or w.in_flight or w.used_at >= recent]
        if not windows:
            return True
        # What is pushed now; counted meanwhile is pushed next time. INCRBY answers the value after the
        # increment (https://redis.io/docs/latest/commands/incrby/): pushing our counts reads everyone's.
        sent = [(w, w.minute, w.new_requests, w.new_tokens, w.shares_in_flight) for w in windows]
        pipe = self._redis.pipeline(transaction=False)
        for window, minute, requests, tokens, shares_in_flight in sent:
            for kind, value in (("requests", requests), ("tokens", tokens)):
                pipe.incrby(f"{window.prefix}:{kind}:{minute}", value)
                pipe.expire(f"{window.prefix}:{kind}:{minute}", _COUNTER_TTL_S)
            if shares_in_flight:
                pipe.hset(f"{window.prefix}:in_flight", self._process, f"{window.in_flight}:{self.clock()}")
                pipe.expire(f"{window.prefix}:in_flight", int(_IN_FLIGHT_FRESH_S) * 2)
                pipe.hgetall(f"{window.prefix}:in_flight")
        try:
            async with asyncio.timeout(_TIMEOUT_S):
                replies = iter(await pipe.execute())
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = time.monotonic() + _BREAKER_S
            log.warning("rate limits unavailable: fail-open keys are served unlimited, fail-closed keys refused",
                        extra={"error": str(exc) or type(exc).__name__})
            return False
        synced = time.monotonic()
        for window, minute, requests, tokens, shares_in_flight in sent:
            total_requests, _expire, total_tokens, _expire = (next(replies) for _reply in range(4))
            if shares_in_flight:
                for _written in range(2):  # HSET, EXPIRE
                    next(replies)
                window.others_in_flight = others_in_flight(next(replies), self._process, self.clock())
            if window.minute == minute:
                window.requests, window.tokens = int(total_requests), int(total_tokens)
                window.new_requests -= requests
                window.new_tokens -= tokens
            window.synced_at = synced
        return True

    async def flush(self) -> None:
        """Push what this process counted now (tests; shutdown)."""
        await self.sync()
        if self._syncing is not None:
            self._syncing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncing
            self._syncing = None
