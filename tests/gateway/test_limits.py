"""Rate limits: the pure decisions table-driven, then through the real gateway app, mock workers, Postgres
and Redis (and a Redis that is not there)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiopg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from fleet import SMALL, ServeOne, WorkerFactory, insert_ready_instance, new_key, refresh, set_instance
from waiting import wait_until

from gateway import limits, metrics, state
from gateway.limits import KeyLimits, Rates, Used
from inventiv.settings import Settings
from inventiv.worker_secrets import worker_secrets
from sql.api_key_store import hash_key

CHAT = "/v1/chat/completions"
BODY = {"model": SMALL, "messages": [{"role": "user", "content": "hello there"}]}
# "hello there" is 2 prompt tokens to the mock worker; with tokens=5 a request costs 7.
REQUEST_TOKENS = 7

Gateway = Callable[..., Awaitable[TestClient]]


# Pure decisions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rates", "used", "expected"), [
    (Rates(), Used(10**6, 10**9, 10**4), None),
    (Rates(requests_per_minute=3), Used(requests=2), None),
    (Rates(requests_per_minute=3), Used(requests=3), "requests"),
    (Rates(tokens_per_minute=100), Used(tokens=99), None),
    (Rates(tokens_per_minute=100), Used(tokens=100), "tokens"),
    (Rates(concurrent_requests=2), Used(in_flight=1), None),
    (Rates(concurrent_requests=2), Used(in_flight=2), "concurrency"),
    (Rates(5, 100, 2), Used(5, 100, 2), "requests"),
    (Rates(5, 100, 2), Used(4, 100, 2), "tokens"),
])
def test_exceeded(rates: Rates, used: Used, expected: str | None) -> None:
    assert limits.exceeded(rates, used) == expected


@pytest.mark.parametrize(("now", "minute", "reset"), [
    (0.0, 0, 60.0), (59.5, 0, 0.5), (120.0, 2, 60.0), (125.0, 2, 55.0),
])
def test_window_of(now: float, minute: int, reset: float) -> None:
    assert limits.window_of(now) == (minute, reset)


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0001, "1ms"), (0.02, "20ms"), (0.9994, "999ms"), (1.0, "1s"), (1.2, "2s"), (59.0, "59s"), (60.0, "1m0s"),
    (360.0, "6m0s"),
])
def test_duration_is_written_as_openai_does(seconds: float, text: str) -> None:
    assert limits.duration(seconds) == text


def test_headers_show_the_scope_with_less_remaining_and_only_set_limits() -> None:
    both = KeyLimits(key=Rates(requests_per_minute=10), org=Rates(requests_per_minute=100, tokens_per_minute=1000))
    assert limits.rate_headers(both, Used(requests=2), Used(requests=95, tokens=400), True, 30.0) == {
        "x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "4", "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "600", "x-ratelimit-reset-tokens": "30s",
    }
    only_concurrency = KeyLimits(key=Rates(concurrent_requests=1), org=Rates())
    assert limits.rate_headers(only_concurrency, Used(), Used(), True, 30.0) == {}


def test_remaining_never_goes_below_zero() -> None:
    overshot = KeyLimits(key=Rates(tokens_per_minute=10), org=Rates())
    headers = limits.rate_headers(overshot, Used(tokens=25), Used(), False, 5.0)
    assert headers["x-ratelimit-remaining-tokens"] == "0"


@pytest.mark.parametrize(("key_used", "org_used", "scope", "limit", "retry", "says"), [
    (Used(requests=3), Used(), "key", "requests", "12", "Rate limit reached for this API key: 3 requests per minute"),
    (Used(), Used(tokens=50), "organization", "tokens", "12",
     "Rate limit reached for this API organization: 50 tokens per minute"),
    (Used(in_flight=1), Used(), "key", "concurrency", "1", "Too many concurrent requests for this API key: limit 1"),
])
def test_refusal_names_the_scope_and_limit(
    key_used: Used, org_used: Used, scope: str, limit: str, retry: str, says: str
) -> None:
    rules = KeyLimits(key=Rates(requests_per_minute=3, concurrent_requests=1), org=Rates(tokens_per_minute=50))
    refused = limits.refusal(rules, key_used, org_used, 11.2)
    assert refused is not None
    assert (refused.status, refused.code, refused.scope, refused.limit) == (429, "rate_limit_exceeded", scope, limit)
    assert refused.headers["Retry-After"] == retry
    assert refused.message.startswith(says)


def test_no_refusal_under_the_limits() -> None:
    rules = KeyLimits(key=Rates(requests_per_minute=3), org=Rates(tokens_per_minute=50))
    assert limits.refusal(rules, Used(requests=2), Used(tokens=49), 1.0) is None


def test_a_row_without_limits_costs_nothing_and_the_fail_mode_travels() -> None:
    unlimited = {"requests_per_minute": None, "org_tokens_per_minute": None, "limits_fail_mode": "closed"}
    assert limits.key_limits_from_row(unlimited) is None
    row = {"requests_per_minute": None, "org_concurrent_requests": 4, "limits_fail_mode": "closed"}
    assert limits.key_limits_from_row(row) == KeyLimits(Rates(), Rates(concurrent_requests=4), fail_closed=True)


def test_in_flight_of_other_processes_counts_only_fresh_stamps() -> None:
    fields = {b"me": b"5:100.0", b"a": b"2:99.0", b"b": b"3:95.0", b"crashed": b"7:80.0", b"idle": b"0:100.0"}
    # At 100 s: "crashed" pushed 20 s ago (past the 10 s freshness), "me" is this process.
    assert limits.others_in_flight(fields, "me", 100.0) == 5


# Through the gateway ---------------------------------------------------------------------------------


async def _limit_key(pool: aiopg.Pool, key: str, **values: Any) -> None:
    assignments = ", ".join(f"{name} = %({name})s" for name in values)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(f"UPDATE api_keys SET {assignments} WHERE key_hash = %(h)s", {**values, "h": hash_key(key)})


async def _limit_org(pool: aiopg.Pool, slug: str, **values: Any) -> None:
    assignments = ", ".join(f"{name} = %({name})s" for name in values)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(f"UPDATE organizations SET {assignments} WHERE slug = %(s)s", {**values, "s": slug})


def _pin_clock(client: TestClient) -> float:
    """Hold the limiter inside one minute (30 s before its end), so no test straddles two windows."""
    now = (time.time() // 60) * 60 + 30
    client.server.app[state.PLANE].limits.clock = lambda: now  # type: ignore[index]
    return now


async def _chat(client: TestClient, key: str, **extra: Any) -> tuple[int, dict[str, str], Any]:
    async with client.post(CHAT, json={**BODY, **extra}, headers={"Authorization": f"Bearer {key}"}) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def _settled(client: TestClient) -> None:
    await client.server.app[state.PLANE].limits.flush()  # type: ignore[index]


async def test_requests_per_minute_refuse_the_next_with_429_and_openai_headers(
    serve_one: ServeOne, db_pool: aiopg.Pool
) -> None:
    worker, client, key, _ = await serve_one(tokens=5)
    await _limit_key(db_pool, key, requests_per_minute=2)
    await refresh(client)
    _pin_clock(client)
    seen = [await _chat(client, key) for _ in range(3)]
    assert [s for s, _, _ in seen] == [200, 200, 429]
    assert [h["x-ratelimit-remaining-requests"] for _, h, _ in seen] == ["1", "0", "0"]
    _, headers, body = seen[2]
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-reset-requests"] == "30s"
    assert headers["Retry-After"] == "30"
    assert "x-ratelimit-limit-tokens" not in headers
    assert body == {"error": {
        "message": "Rate limit reached for this API key: 2 requests per minute. Retry in 30 s.",
        "type": "rate_limit_error", "code": "rate_limit_exceeded",
    }}
    # The refused request never reached the worker.
    assert (await _worker_stats(worker))["requests"][CHAT] == 2


async def _worker_stats(worker: Any) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(worker.make_url("/mock/stats")) as resp:
        return dict(await resp.json())


async def test_an_organization_limit_holds_across_its_keys(serve_one: ServeOne, db_pool: aiopg.Pool) -> None:
    _, client, key, _ = await serve_one(tokens=5)
    second = await new_key(db_pool)
    await _limit_org(db_pool, "demo", requests_per_minute=3)
    await refresh(client)
    _pin_clock(client)
    statuses = [(await _chat(client, k))[0] for k in (key, second, key, second)]
    assert statuses == [200, 200, 200, 429]
    _, _, body = await _chat(client, key)
    assert body["error"]["message"].startswith("Rate limit reached for this API organization: 3 requests")


async def test_tokens_per_minute_charge_what_the_worker_reported(serve_one: ServeOne, db_pool: aiopg.Pool) -> None:
    _, client, key, _ = await serve_one(tokens=5)
    await _limit_key(db_pool, key, tokens_per_minute=REQUEST_TOKENS + 1)
    await refresh(client)
    _pin_clock(client)
    status, headers, _ = await _chat(client, key)
    assert (status, headers["x-ratelimit-remaining-tokens"]) == (200, str(REQUEST_TOKENS + 1))
    await _settled(client)
    status, headers, _ = await _chat(client, key)
    # 1 token left: admitted (below the limit), and it overshoots by its own size.
    assert (status, headers["x-ratelimit-remaining-tokens"]) == (200, "1")
    await _settled(client)
    status, headers, body = await _chat(client, key)
    assert (status, headers["x-ratelimit-remaining-tokens"], headers["x-ratelimit-limit-tokens"]) == (429, "0", "8")
    assert body["error"]["message"].startswith("Rate limit reached for this API key: 8 tokens per minute")


async def test_concurrent_requests_are_counted_until_each_ends(serve_one: ServeOne, db_pool: aiopg.Pool) -> None:
    _, client, key, _ = await serve_one(tokens=20, token_delay_ms=20)
    await _limit_key(db_pool, key, concurrent_requests=1)
    await refresh(client)
    _pin_clock(client)
    headers = {"Authorization": f"Bearer {key}"}
    async with client.post(CHAT, json={**BODY, "stream": True}, headers=headers) as first:
        assert first.status == 200
        status, refused_headers, body = await _chat(client, key)
        assert (status, refused_headers["Retry-After"]) == (429, "1")
        assert body["error"]["message"].startswith("Too many concurrent requests for this API key: limit 1.")
        await first.read()
    await _settled(client)
    assert (await _chat(client, key))[0] == 200


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def without_redis(
    start_worker: WorkerFactory, start_gateway: Gateway, db_pool: aiopg.Pool, gateway_settings: Settings
) -> tuple[TestClient, str]:
    """A worker and a gateway whose Redis URL points at a closed port; an inference key."""
    instance = await insert_ready_instance(db_pool, SMALL, "127.0.0.1", 1)
    worker = await start_worker(api_key=worker_secrets(gateway_settings).for_instance(instance))
    await set_instance(db_pool, instance, worker_port=worker.port)
    key = await new_key(db_pool)
    client = await start_gateway(redis_url=f"redis://127.0.0.1:{_closed_port()}/0")
    return client, key


async def test_redis_down_serves_a_fail_open_key_and_logs_once(
    without_redis: tuple[TestClient, str], db_pool: aiopg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    client, key = without_redis
    await _limit_key(db_pool, key, requests_per_minute=1)
    await refresh(client)
    before = metrics.LIMITS_UNAVAILABLE.labels("open")._value.get()
    with caplog.at_level(logging.WARNING, logger="gateway.limits"):
        statuses = [(await _chat(client, key))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 200]
    assert metrics.LIMITS_UNAVAILABLE.labels("open")._value.get() - before == 4
    assert len([r for r in caplog.records if r.name == "gateway.limits"]) == 1


async def test_an_unlimited_key_never_asks_redis(without_redis: tuple[TestClient, str]) -> None:
    client, key = without_redis
    before = [metrics.LIMITS_UNAVAILABLE.labels(mode)._value.get() for mode in limits.FAIL_MODES]
    status, headers, _ = await _chat(client, key)
    assert status == 200
    assert not any(name.startswith("x-ratelimit") for name in headers)
    # Redis was never asked: asking it here would have failed and been counted.
    assert [metrics.LIMITS_UNAVAILABLE.labels(mode)._value.get() for mode in limits.FAIL_MODES] == before


async def test_redis_down_refuses_a_fail_closed_key_with_503(
    without_redis: tuple[TestClient, str], db_pool: aiopg.Pool
) -> None:
    client, key = without_redis
    await _limit_key(db_pool, key, requests_per_minute=1000, limits_fail_mode="closed")
    await refresh(client)
    status, _, body = await _chat(client, key)
    assert status == 503
    assert body["error"]["code"] == "limits_unavailable"
    assert body["error"]["type"] == "service_unavailable"
    assert "limits_fail_mode 'closed'" in body["error"]["message"]


async def test_a_crashed_gateways_in_flight_requests_stop_counting(
    serve_one: ServeOne, db_pool: aiopg.Pool, redis: aioredis.Redis, settings: Settings
) -> None:
    _, client, key, _ = await serve_one()
    await _limit_org(db_pool, "demo", concurrent_requests=1)
    await refresh(client)
    now = _pin_clock(client)
    app = client.server.app
    assert app is not None
    org_id = app[state.PLANE].keys.lookup(key).organization_id  # type: ignore[union-attr]
    # Another gateway process pushed one request in flight just now, then died.
    await redis.hset(f"{settings.redis_prefix}limits:org:{org_id}:in_flight", "crashed", f"1:{now}")
    status, headers, _ = await _chat(client, key)
    assert (status, headers["Retry-After"]) == (429, "1")
    app[state.PLANE].limits.clock = lambda: now + 11
    await _settled(client)
    assert (await _chat(client, key))[0] == 200


async def test_processes_share_their_counts_through_redis(
    serve_one: ServeOne, start_gateway: Gateway, db_pool: aiopg.Pool
) -> None:
    _, first, key, _ = await serve_one(tokens=5)
    await _limit_key(db_pool, key, requests_per_minute=3)
    await refresh(first)
    second = await start_gateway()
    for gateway in (first, second):
        _pin_clock(gateway)
    assert [(await _chat(first, key))[0] for _ in range(2)] == [200, 200]
    await _settled(first)
    await _settled(second)
    status, headers, _ = await _chat(second, key)
    assert (status, headers["x-ratelimit-remaining-requests"]) == (200, "0")
    await _settled(second)
    await _settled(first)
    assert (await _chat(first, key))[0] == 429


async def test_counts_reach_redis_without_being_asked(redis: aioredis.Redis, settings: Settings) -> None:
    limiter = limits.Limiter(redis, settings)
    now = (time.time() // 60) * 60 + 30
    limiter.clock = lambda: now
    rules = KeyLimits(key=Rates(requests_per_minute=10), org=Rates())
    admission = await limiter.admit("k1", "o1", rules)
    assert admission is not None
    limiter.settle(admission, 0)
    counter = f"{settings.redis_prefix}limits:key:k1:requests:{int(now // 60)}"

    # The periodic sync pushes the count (the first admission synced before counting it).
    async def synced() -> bool:
        seen = await redis.get(counter)
        assert seen == b"1", seen
        return True

    await wait_until(synced, timeout_s=2, interval_s=0.02, what="the count in Redis")
    await limiter.flush()
