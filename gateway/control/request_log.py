"""The control API's requests, traced like inference ones: a correlation id and one access-log line each.

Every control handler is wrapped at registration (the inference routes, on the hot path, log their own
richer line in gateway/inference.py); both go to the data plane's access sink, so INVENTIV_ACCESS_LOG
turns both off. The correlation id is the client's sane `X-Request-Id` or a new
one, returned in `X-Request-Id` and set as the log context's `cid` while the handler runs, so its own log
lines carry it; handlers that create or end an instance log the instance id beside it.
"""

from __future__ import annotations

import os
import time

from aiohttp import web

from gateway import tracing
from gateway.errors import ApiError, Handler
from gateway.state import PLANE
from inventiv.logs import correlation_id


def logged(handler: Handler) -> Handler:
    async def run(request: web.Request) -> web.StreamResponse:
        request_id = tracing.client_request_id(request.headers.get("X-Request-Id")) or os.urandom(16).hex()
        token = correlation_id.set(request_id)
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            response.headers["X-Request-Id"] = request_id
            return response
        except ApiError as exc:
            # Answered here rather than by the error middleware, so the error carries the id too.
            status = exc.status
            return exc.response(headers={"X-Request-Id": request_id})
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            access = request.app[PLANE].access
            if access is not None and tracing.enabled():
                route = request.match_info.route.resource
                access.write({
                    "request_id": request_id, "method": request.method,
                    "route": route.canonical if route is not None else request.path, "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                })  # fmt: skip
            correlation_id.reset(token)

    return run
