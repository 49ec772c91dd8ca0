"""The inference routes' short way in, past the application's router and middleware chain.

aiohttp's `Application` resolves every request through its router, builds its match info and runs
the middleware chain before the handler; measured on one core with a trivial handler, a
`web.Application` cost 0.067 ms of CPU per request and aiohttp's low-level `web.Server` 0.045 ms. A
gateway's work per inference request is a few times that trivial handler's, so the difference was
about a tenth of it.

`DirectRoutes` is the server's request handler: a POST whose raw path is exactly an inference route
goes straight to that route's handler, through `error_middleware` as the application would call it;
anything else (the control API, the console, `/metrics`, those routes with a query string or an
`Expect` header) goes to the application's own handler unchanged. The inference routes stay
registered on the application as well, so the application alone (aiohttp's TestClient) serves the
same answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import cast

from aiohttp import web
from aiohttp.web_request import BaseRequest

from gateway.errors import Handler, error_middleware

ServerHandler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


class DirectRoutes:
    """Dispatch exact inference POSTs to their handlers, everything else to `fallback` (the application)."""

    __slots__ = ("_fallback", "_routes")

    def __init__(self, routes: Mapping[str, Handler], fallback: ServerHandler) -> None:
        self._routes = dict(routes)
        self._fallback = fallback

    async def __call__(self, request: BaseRequest) -> web.StreamResponse:
        # A request with `Expect: 100-continue` (curl's, for large bodies) is the application's: its
        # router answers the expectation before the body is read.
        if request.method == "POST" and "Expect" not in request.headers:
            handler = self._routes.get(request.raw_path)
            if handler is not None:
                # The application's request factory (AppRunner's server) makes every request a web.Request.
                return await error_middleware(cast(web.Request, request), handler)
        return await self._fallback(request)
