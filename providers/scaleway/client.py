"""A thin aiohttp client for Scaleway's REST APIs: auth, retries, both pagination styles, typed errors.

Scaleway's own Python SDK blocks the event loop (it calls `requests`), so this is the whole client.
Retries: 429, 5xx and connection errors, with capped exponential backoff and jitter, honouring
`Retry-After`. A request that may have been carried out (a 5xx or a broken connection after sending)
is retried only when repeating it is harmless: creates are not, so their caller decides (the scheduler
looks for the server by tag before creating again). A repeat of a call that did run may be refused
(attach: "already attached"); the provider reads the resource again to tell that from a real refusal.
The delays go through an injectable `sleep`. Bodies are JSON, except `PlainText` ones (server user data).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import aiohttp
from multidict import CIMultiDict

from providers.base import ProviderError, ProviderTimeout, TransientError
from providers.scaleway.errors import error_from_response

log = logging.getLogger(__name__)

Params = Sequence[tuple[str, str]]
T = TypeVar("T")

# Instance allows at most 100 per page; Block and Marketplace accept as many, 100 keeps bodies small.
PAGE_SIZE = 100
# A bound on any listing, so an API that never returns a short page cannot loop forever (10,000 items).
_MAX_PAGES = 100
# No Scaleway call takes long; a hung connection must not stall a scheduler step.
_REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    # terraform-provider-scaleway: 3 retries, backoff from 2 s up to 2 min.
    attempts: int = 4
    base_s: float = 1.0
    cap_s: float = 120.0

    def delay(self, retry: int, retry_after: float | None, rand: float) -> float:
        """Seconds before retry number `retry` (1 = first), `rand` uniform in [0, 1)."""
        if retry_after is not None:
            return min(self.cap_s, max(0.0, retry_after))
        ceiling = min(self.cap_s, self.base_s * 2 ** (retry - 1))
        # "Equal jitter": never less than half the backoff (a storm of clients still spreads out over
        # the other half), where full jitter could retry at once.
        return ceiling / 2 + ceiling / 2 * rand


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class PlainText:
    """A request body sent as is with `Content-Type: text/plain` (server user data), not as JSON."""

    text: str


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    data: Any  # the decoded JSON body, None when empty
    raw: bytes = b""  # the body as sent: user data values are plain text, not JSON


class ScalewayClient:
    def __init__(
        self,
        secret_key: str,
        api_url: str,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        timeout_s: float = _REQUEST_TIMEOUT_S,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._headers = {"X-Auth-Token": secret_key, "Content-Type": "application/json"}
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rand = rand
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params = (),
        body: Any = None,
        idempotent: bool = True,
    ) -> Reply:
        """One call, retried as the module docstring says; any failure is a `ProviderError` leaf."""
        context = f"{method} {path}"
        for attempt in range(1, self._retry.attempts + 1):
            outcome = await self._attempt(method, path, params, body, context)
            if isinstance(outcome, Reply):
                return outcome
            error, retry_after, may_have_run = outcome
            if not idempotent and may_have_run:
                # The caller decides: only it can tell whether the call was carried out (create_once).
                error.may_have_run = True
                raise error
            if not error.retryable or attempt == self._retry.attempts:
                raise error
            delay = self._retry.delay(attempt, retry_after, self._rand())
            log.warning("scaleway call failed, retrying", extra={"call": context, "error": str(error), "delay": delay})
            await self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def create_once(self, post: Callable[[], Awaitable[T]], find: Callable[[], Awaitable[list[T]]]) -> T:
        """Create through `post` (a non-idempotent request): a create is not repeated blindly, but what it
        makes carries our name and tags, so after a failure that may have been carried out (a lost reply)
        `find` tells whether it was; only when it was not is the create tried again. A failure that cannot
        have run (refused connection, 429) was already retried by `request`, within the same budget."""
        for attempt in range(1, self.attempts + 1):
            try:
                return await post()
            except TransientError as exc:
                if not exc.may_have_run:
                    raise
                found = await find()
                if found:
                    return found[0]
                if attempt == self.attempts:
                    raise
                await self.backoff(attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def pause(self, seconds: float) -> None:
        """Wait through the client's (injectable) sleep, for callers polling the API."""
        await self._sleep(seconds)

    async def backoff(self, retry: int) -> None:
        """Wait as the retry policy says before retry number `retry` (1 = first) of a caller's own loop."""
        await self._sleep(self._retry.delay(retry, None, self._rand()))

    @property
    def attempts(self) -> int:
        return self._retry.attempts

    async def _attempt(
        self, method: str, path: str, params: Params, body: Any, context: str
    ) -> Reply | tuple[ProviderError, float | None, bool]:
        """The reply, or (error, Retry-After, whether the server may have carried the call out)."""
        try:
            reply = await self._send(method, path, params, body)
        except aiohttp.ClientConnectorError as exc:
            return TransientError(f"Scaleway {context}: cannot connect: {exc}"), None, False
        except TimeoutError as exc:
            return ProviderTimeout(f"Scaleway {context}: timed out: {exc}"), None, True
        except aiohttp.ClientError as exc:
            return TransientError(f"Scaleway {context}: connection failed: {exc}"), None, True
        if reply.status < 400:
            return reply
        error = error_from_response(reply.status, reply.data, context)
        # A 429 was refused before anything ran.
        return error, parse_retry_after(reply.headers.get("Retry-After")), reply.status != 429

    async def _send(self, method: str, path: str, params: Params, body: Any) -> Reply:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        data: str | None = None
        headers = None
        if isinstance(body, PlainText):
            data, headers = body.text, {"Content-Type": "text/plain"}
        elif body is not None:
            data = json.dumps(body)
        async with self._session.request(
            method, self.api_url + path, params=list(params), data=data, headers=headers
        ) as resp:
            raw = await resp.read()
            return Reply(resp.status, CIMultiDict(resp.headers), _decode(raw), raw)

    # -- pagination --------------------------------------------------------------------------------

    async def instance_pages(self, path: str, key: str, params: Params = ()) -> AsyncIterator[Any]:
        """Each page's `key` (a list, or a map for products) of an Instance listing: page + per_page,
        the total only in the X-Total-Count header. Pages are read until the total or an empty page."""
        seen = 0
        for page in range(1, _MAX_PAGES + 1):
            paging = [("page", str(page)), ("per_page", str(PAGE_SIZE))]
            reply = await self.request("GET", path, params=[*params, *paging])
            chunk = _items(reply.data, key, path)
            seen += len(chunk)
            yield chunk
            if _last_page(chunk, seen, _int(reply.headers.get("X-Total-Count"))):
                return
        raise ProviderError(f"Scaleway GET {path}: more than {_MAX_PAGES} pages")

    async def counted_pages(self, path: str, key: str, params: Params = ()) -> AsyncIterator[Any]:
        """Each page's `key` of a Block or Marketplace listing: page + page_size, `total_count` in the body."""
        seen = 0
        for page in range(1, _MAX_PAGES + 1):
            paging = [("page", str(page)), ("page_size", str(PAGE_SIZE))]
            reply = await self.request("GET", path, params=[*params, *paging])
            chunk = _items(reply.data, key, path)
            seen += len(chunk)
            yield chunk
            if _last_page(chunk, seen, _int(reply.data.get("total_count"))):
                return
        raise ProviderError(f"Scaleway GET {path}: more than {_MAX_PAGES} pages")

    async def list_instance(self, path: str, key: str, params: Params = ()) -> list[Any]:
        return [item async for chunk in self.instance_pages(path, key, params) for item in chunk]

    async def map_instance(self, path: str, key: str, params: Params = ()) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        async for chunk in self.instance_pages(path, key, params):
            merged.update(chunk)
        return merged

    async def list_counted(self, path: str, key: str, params: Params = ()) -> list[Any]:
        return [item async for chunk in self.counted_pages(path, key, params) for item in chunk]


def _last_page(chunk: Any, seen: int, total: int | None) -> bool:
    if not chunk:
        return True
    if total is not None:
        return seen >= total
    # No total: a short page is the last. With a total, a short page may only mean the API caps the page
    # size below what was asked, so the total decides.
    return len(chunk) < PAGE_SIZE


def _decode(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        # Gateways in front of the API answer some errors in HTML; the status still says what happened.
        return {"message": raw[:200].decode(errors="replace")}


def _items(data: Any, key: str, path: str) -> Any:
    if not isinstance(data, dict):
        raise ProviderError(f"Scaleway GET {path}: expected a JSON object with {key!r}")
    chunk = data.get(key)
    return [] if chunk is None else chunk


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
