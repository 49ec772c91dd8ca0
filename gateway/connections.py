"""Client connections: a deadline for each request head, and JSON answers to requests that do not parse.

aiohttp 3.x's server has no request-head timeout. Its `keepalive_timeout` (aiohttp/web_protocol.py,
`RequestHandler.connection_made` and the end of `start()`) closes a connection still waiting for a
head that long after it opened or after its last response, so a client trickling a head one byte at a
time holds the connection for the whole idle timeout. `HeadTimeoutHandler` arms a timer when the
first bytes of a head arrive and cancels it once the head is parsed: a head that arrives in one read
(every ordinary request) never arms one, so keep-alive requests pay one attribute test, no timer.

aiohttp answers a request it cannot parse (bad request line, oversized header, broken chunked
encoding) from `RequestHandler.handle_error` in text/plain, logging an ERROR with a traceback each
time: any client could flood the log. Those are the client's errors: an OpenAI-shaped JSON 400 here,
and a DEBUG line.

A body is read by the handler, so its deadline is there: `read_body`.

The server builds these through `GatewayRunner` (gateway/runner.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.error_codes import ErrorCode
from gateway.errors import ApiError, body_too_large, body_too_slow

log = logging.getLogger(__name__)


class HeadTimeoutHandler(RequestHandler):
    """aiohttp's connection protocol, closing a connection whose request head takes too long to arrive."""

    __slots__ = ("_head_timeout_s", "_head_timer")

    def __init__(self, manager: web.Server, head_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout_s = head_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # `_waiter` is pending while `start()` waits for the next complete head (web_protocol.py). The first
        # read of a new connection can come before `start()` first waits: the timer then starts at the
        # head's second read, so a trickled head is cut within the timeout plus one gap between bytes.
        waiter = self._waiter
        waiting = waiter is not None and not waiter.done()
        timer = self._head_timer
        if timer is None:
            if waiting and data:
                self._head_timer = self._loop.call_later(self._head_timeout_s, self._head_timed_out)
        elif not waiting:
            timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            log.debug("request head not received in time; closing", extra={"timeout_s": self._head_timeout_s})
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        reason = message or (str(exc) if exc is not None else "malformed request")
        log.debug("malformed HTTP request", extra={"status": status, "error": reason, "peer": request.remote})
        if request.writer.output_size > 0:
            # As aiohttp's own: a response already started cannot carry the error.
            raise ConnectionError("response already started; cannot send the error")
        error = ApiError(
            status, f"Malformed HTTP request: {reason}", ErrorCode.MALFORMED_REQUEST, close_connection=True
        )
        return error.response()


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    """The whole request body within `timeout_s` (408 past it); 413 over the app's `client_max_size`;
    400 for a body that breaks its own framing (chunked encoding, Content-Length)."""
    try:
        if request.content.is_eof():
            # The whole body came with the head (most inference requests): nothing to wait for, so no
            # timer to arm and cancel (asyncio.timeout was 4 % of the CPU of a short request).
            return await request.read()
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        # aiohttp reads what is left of the body for its `lingering_time`, 10 s, then closes the connection.
        raise body_too_slow(timeout_s) from None
    except web.HTTPRequestEntityTooLarge:
        raise body_too_large(request.client_max_size) from None
    except HttpProcessingError as exc:
        raise ApiError(400, f"Malformed request body: {exc.message}", ErrorCode.MALFORMED_REQUEST) from None
