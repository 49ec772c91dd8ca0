"""The control API's requests, traced like inference ones: a correlation id and one access-log line each.

Every control handler is wrapped at registration (the inference routes, on the hot path, log their own
richer line in gateway/inference.py); both go to the data plane's access sink, so INVENTIV_ACCESS_LOG
turns both off. The correlation id is the client's sane `X-Request-Id` or a new
one, returned in `X-Request-Id` and set as the log context's `cid` while the handler runs, so its own log
lines carry it; handlers that create or end an instance log the instance id beside it.

Every control route reads Postgres: while it is unreachable (or does not answer within the pool's
timeout) the answer is an OpenAI-shaped 503 naming it, with one warning line, never a 500 traceback.
"""

from __future__ import annotations

import logging
import time

import psycopg2
from aiohttp import web

from gateway import tracing
from gateway.error_codes import ErrorCode
from gateway.errors import ApiError, Handler
from gateway.state import PLANE
from inventiv.logs import correlation_id
from sql.pool import DatabaseUnavailable

log = logging.getLogger(__name__)

# What aiopg raises when Postgres is gone: a refused or dropped connection (OperationalError, or
# InterfaceError on a pooled connection already closed), and TimeoutError past the pool's timeout.
_DATABASE_DOWN = (psycopg2.OperationalError, psycopg2.InterfaceError, DatabaseUnavailable, TimeoutError)


def logged(handler: Handler) -> Handler:
    async def run(request: web.Request) -> web.StreamResponse:
        request_id = tracing.client_request_id(request.headers.get("X-Request-Id")) or tracing.own_request_id()
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
        except _DATABASE_DOWN as exc:
            status = 503
            log.warning("database unavailable", extra={"error": _first_line(exc), "path": request.path})
            error = ApiError(503, "The database is unavailable; retry shortly.", ErrorCode.DATABASE_UNAVAILABLE)
            return error.response(headers={"X-Request-Id": request_id})
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
