"""The Scaleway REST client against recorded bodies (aioresponses): auth, retries, pagination, errors."""

from __future__ import annotations

import copy
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aioresponses import aioresponses
from scaleway_bodies import exchanges, products_page, recorded
from yarl import URL

from providers.base import InvalidRequest, NotFound, ProviderTimeout, QuotaExceeded, TransientError
from providers.scaleway.client import PAGE_SIZE, RetryPolicy, ScalewayClient, parse_retry_after

API = "https://api.test"
SERVERS = "/instance/v1/zones/fr-par-2/servers"
SERVER = f"{SERVERS}/6bc4b49b-bd60-4d64-8ffc-9346f18ef88b"
VOLUMES = "/block/v1/zones/fr-par-2/volumes"


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def client(sleeps: Sleeps) -> AsyncIterator[ScalewayClient]:
    policy = RetryPolicy(attempts=3, base_s=2.0)
    made = ScalewayClient("secret", API + "/", retry=policy, sleep=sleeps, rand=lambda: 0.5)
    yield made
    await made.close()


def calls(mocked: aioresponses, method: str, path: str) -> list[Any]:
    return [call for (m, url), found in mocked.requests.items() if m == method and url.path == path for call in found]


# -- retry policy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "retry_after", "rand", "expected"),
    [
        (1, None, 0.0, 1.0),  # half of base 2 s at least
        (1, None, 0.999, 1.999),
        (2, None, 0.5, 3.0),  # ceiling 4 s: 2 + 2 * 0.5
        (3, None, 1.0, 8.0),
        (10, None, 1.0, 120.0),  # capped at 2 minutes
        (1, 7.0, 0.9, 7.0),  # Retry-After wins over the backoff
        (1, 900.0, 0.0, 120.0),  # ... but not over the cap
        (1, -3.0, 0.0, 0.0),
    ],
)
def test_retry_delay(retry: int, retry_after: float | None, rand: float, expected: float) -> None:
    assert RetryPolicy(base_s=2.0, cap_s=120.0).delay(retry, retry_after, rand) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("5", 5.0),
        ("1.5", 1.5),
        ("-2", 0.0),
        ("Thu, 30 Jul 2026 12:53:25 GMT", 10.0),  # 10 s after `now`
        ("Thu, 30 Jul 2026 12:53:05 GMT", 0.0),  # already past
        ("soon", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    now = 1785415995.0  # Thu, 30 Jul 2026 12:53:15 GMT, the recordings' Date
    assert parse_retry_after(header, now) == expected


# -- requests and retries ----------------------------------------------------------------------------


async def test_sends_the_token_and_json(client: ScalewayClient) -> None:
    with aioresponses() as mocked:
        mocked.post(API + SERVERS, status=201, payload=recorded("create_server_response_L40S"))
        reply = await client.request("POST", SERVERS, body={"name": "x"}, idempotent=False)
        [call] = calls(mocked, "POST", SERVERS)
    assert reply.status == 201 and reply.data["server"]["state"] == "stopped"
    session_headers = client._session.headers if client._session else {}
    assert session_headers["X-Auth-Token"] == "secret"
    assert call.kwargs["data"] == '{"name": "x"}'


async def test_5xx_on_a_read_is_retried_with_backoff(client: ScalewayClient, sleeps: Sleeps) -> None:
    with aioresponses() as mocked:
        mocked.get(API + SERVER, status=503, payload={"message": "unavailable"})
        mocked.get(API + SERVER, status=500, body="<html>oops</html>", content_type="text/html")
        mocked.get(API + SERVER, status=200, payload={"server": recorded("create_server_response_L40S")["server"]})
        reply = await client.request("GET", SERVER)
    assert reply.data["server"]["id"] == "6bc4b49b-bd60-4d64-8ffc-9346f18ef88b"
    assert sleeps.delays == [1.5, 3.0]


async def test_retries_end_with_the_typed_error(client: ScalewayClient, sleeps: Sleeps) -> None:
    with aioresponses() as mocked:
        mocked.get(API + SERVER, status=502, payload={"message": "bad gateway"}, repeat=True)
        with pytest.raises(TransientError, match="502"):
            await client.request("GET", SERVER)
        assert len(calls(mocked, "GET", SERVER)) == 3
    assert len(sleeps.delays) == 2


async def test_retry_after_is_respected(client: ScalewayClient, sleeps: Sleeps) -> None:
    with aioresponses() as mocked:
        mocked.post(API + SERVERS, status=429, headers={"Retry-After": "7"}, payload={"message": "slow down"})
        mocked.post(API + SERVERS, status=201, payload=recorded("create_server_response_L40S"))
        # A 429 was refused before anything ran: even a create is retried.
        await client.request("POST", SERVERS, body={}, idempotent=False)
    assert sleeps.delays == [7.0]


async def test_a_create_that_may_have_run_is_not_retried(client: ScalewayClient, sleeps: Sleeps) -> None:
    with aioresponses() as mocked:
        mocked.post(API + SERVERS, status=500, payload={"message": "internal error", "type": "internal_error"})
        with pytest.raises(TransientError):
            await client.request("POST", SERVERS, body={}, idempotent=False)
        assert len(calls(mocked, "POST", SERVERS)) == 1
    assert sleeps.delays == []


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, recorded("server_404"), NotFound),
        (403, {"type": "invalid_request_error", "message": "Quota exceeded for this resource."}, QuotaExceeded),
        (400, {"type": "invalid_arguments", "message": "bad"}, InvalidRequest),
    ],
)
async def test_errors_that_retrying_cannot_fix_are_raised_at_once(
    client: ScalewayClient, sleeps: Sleeps, status: int, body: dict[str, Any], error: type[Exception]
) -> None:
    with aioresponses() as mocked:
        mocked.get(API + SERVER, status=status, payload=body)
        with pytest.raises(error):
            await client.request("GET", SERVER)
    assert sleeps.delays == []


async def test_a_timeout_is_retried_then_raised(client: ScalewayClient, sleeps: Sleeps) -> None:
    with aioresponses() as mocked:
        mocked.get(API + SERVER, exception=TimeoutError("slow"), repeat=True)
        with pytest.raises(ProviderTimeout):
            await client.request("GET", SERVER)
    assert len(sleeps.delays) == 2


async def test_connection_refused_is_retried_even_for_a_create(sleeps: Sleeps) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    client = ScalewayClient("k", f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=2), sleep=sleeps)
    try:
        with pytest.raises(TransientError, match="cannot connect"):
            await client.request("POST", SERVERS, body={}, idempotent=False)
    finally:
        await client.close()
    assert len(sleeps.delays) == 1


# -- pagination --------------------------------------------------------------------------------------


def _page(path: str, page: int) -> re.Pattern[str]:
    return re.compile(re.escape(API + path) + rf"\?(.*&)?page={page}(&.*)?$")


async def test_instance_pagination_follows_x_total_count(client: ScalewayClient) -> None:
    products = "/instance/v1/zones/fr-par-2/products/servers"
    with aioresponses() as mocked:
        for page in (1, 2, 3):
            recorded_page = products_page(page)
            assert recorded_page.headers["X-Total-Count"] == "135"
            # The API caps per_page at 50 here, below what was asked: the total decides, not the short page.
            mocked.get(_page(products, page), payload=recorded_page.body, headers={"X-Total-Count": "135"})
        catalog = await client.map_instance(products, "servers")
    assert len(catalog) == 135
    assert catalog["L40S-1-48G"]["volumes_constraint"]["max_size"] == 0


async def test_instance_pagination_without_total_stops_on_a_short_page(client: ScalewayClient) -> None:
    server = recorded("create_server_response_L40S")["server"]
    full = [{**copy.deepcopy(server), "id": f"s{i}"} for i in range(PAGE_SIZE)]
    with aioresponses() as mocked:
        mocked.get(_page(SERVERS, 1), payload={"servers": full})
        mocked.get(_page(SERVERS, 2), payload={"servers": [server]})
        servers = await client.list_instance(SERVERS, "servers", [("tags", "inventiv,instance=1")])
        [first] = calls(mocked, "GET", SERVERS)[:1]
    assert len(servers) == PAGE_SIZE + 1
    assert ("tags", "inventiv,instance=1") in first.kwargs["params"]
    assert ("per_page", str(PAGE_SIZE)) in first.kwargs["params"]


async def test_counted_pagination_follows_total_count(client: ScalewayClient) -> None:
    volume = recorded("block_volume_after_terminate")
    volumes = [{**copy.deepcopy(volume), "id": f"v{i}"} for i in range(150)]
    with aioresponses() as mocked:
        mocked.get(_page(VOLUMES, 1), payload={"volumes": volumes[:100], "total_count": 150})
        mocked.get(_page(VOLUMES, 2), payload={"volumes": volumes[100:], "total_count": 150})
        listed = await client.list_counted(VOLUMES, "volumes", [("tags", "a"), ("tags", "b")])
        first = calls(mocked, "GET", VOLUMES)[0]
    assert [v["id"] for v in listed] == [f"v{i}" for i in range(150)]
    assert [p for p in first.kwargs["params"] if p[0] == "tags"] == [("tags", "a"), ("tags", "b")]
    assert ("page_size", str(PAGE_SIZE)) in first.kwargs["params"]


async def test_counted_pagination_of_the_recorded_marketplace_answer(client: ScalewayClient) -> None:
    [exchange] = exchanges("GET", "/marketplace/v2/local-images")
    url = URL(exchange.url)
    with aioresponses() as mocked:
        mocked.get(re.compile(re.escape(API + url.path) + r"\?.*"), payload=exchange.body)
        images = await client.list_counted(url.path, "local_images", list(url.query.items()))
        assert len(calls(mocked, "GET", url.path)) == 1
    assert [i["label"] for i in images] == ["ubuntu_jammy_gpu_os_12"]


async def test_an_empty_page_ends_the_listing(client: ScalewayClient) -> None:
    with aioresponses() as mocked:
        mocked.get(_page(SERVERS, 1), payload={"servers": []}, headers={"X-Total-Count": "5"})
        assert await client.list_instance(SERVERS, "servers") == []


async def test_a_create_refused_before_it_ran_is_retried_by_request_alone_never_twice_over(
    client: ScalewayClient,
) -> None:
    calls = 0

    async def post() -> str:
        nonlocal calls
        calls += 1
        raise TransientError("429 too many requests")  # request() already spent its retries on it

    async def find() -> list[str]:
        raise AssertionError("a failure that cannot have run needs no look")

    with pytest.raises(TransientError):
        await client.create_once(post, find)
    assert calls == 1
    lost = TransientError("500 after the change was made")
    lost.may_have_run = True
    found: list[str] = []

    async def lost_then_found() -> str:
        raise lost

    async def look() -> list[str]:
        found.append("server-1")
        return found

    assert await client.create_once(lost_then_found, look) == "server-1"
