"""The gateway's aiohttp runner: which protocol serves each client connection.

aiohttp's `web.Server` is the listening socket's protocol factory: `web.Server.__call__` builds
`RequestHandler(self, loop=self._loop, **self._kwargs)` (aiohttp/web_server.py) for each connection.
`GatewayRunner` makes its server build an `InferenceConnection` (gateway/inference_connection.py),
which serves the inference routes itself and hands anything else to aiohttp's protocol, a
`HeadTimeoutHandler` (gateway/connections.py).
At shutdown, the server closes both kinds: idle ones at once, busy ones once their answer is out.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.connections import HeadTimeoutHandler
from gateway.inference_connection import InferenceConnection
from gateway.plane import DataPlane
from gateway.state import PLANE


class _GatewayServer(web.Server):
    head_timeout_s: float
    plane: DataPlane
    inference_connections: set[InferenceConnection]

    # The listening socket's protocol factory: an InferenceConnection, which hands itself over to
    # aiohttp's protocol (`aiohttp_protocol`) for anything it does not serve.
    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        return InferenceConnection(self.plane, self.aiohttp_protocol, self.inference_connections)

    def aiohttp_protocol(self) -> RequestHandler:
        return HeadTimeoutHandler(self, self.head_timeout_s, loop=self._loop, **self._kwargs)

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        for connection in list(self.inference_connections):
            connection.close_idle()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (aiohttp's signature)
        ours = [connection.finish(timeout) for connection in list(self.inference_connections)]
        await asyncio.gather(super().shutdown(timeout), *ours)


class GatewayRunner(web.AppRunner):
    """`web.AppRunner` whose server makes each connection an `InferenceConnection` (see above)."""

    __slots__ = ("_head_timeout_s",)

    def __init__(self, app: web.Application, *, head_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._head_timeout_s = head_timeout_s

    async def _make_server(self) -> web.Server:
        # The application has started here (its cleanup contexts built the data plane).
        server = await super()._make_server()
        # The same server, building our protocol: web.Server has no __slots__ and _GatewayServer adds none.
        server.__class__ = _GatewayServer
        assert isinstance(server, _GatewayServer)
        server.head_timeout_s = self._head_timeout_s
        server.plane = self._app[PLANE]
        server.inference_connections = set()
        return server
