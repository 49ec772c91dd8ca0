"""OpenAI-shaped errors: `{"error": {"message", "type", "code", "param"?}}`, for every route.

Client errors (4xx) are answers, not incidents: nothing here logs them. A bug (any other exception)
is logged with its traceback and answered as a JSON 500 all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from gateway.error_codes import ErrorCode

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger(__name__)

# OpenAI's `type` for each status we answer with.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    408: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ApiError(Exception):
    """Raised anywhere in a handler; the error middleware turns it into the JSON body."""

    def __init__(
        self, status: int, message: str, code: ErrorCode, param: str | None = None, *, close_connection: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        # The client's connection is not reused after this answer (`Connection: close`).
        self.close_connection = close_connection
        # Headers of the error's own, added to the answer's (a 429's Retry-After).
        self.headers: dict[str, str] = {}

    def body(self) -> bytes:
        error: dict[str, str | None] = {
            "message": self.message,
            "type": _TYPES.get(self.status, "api_error"),
            "code": self.code,
        }
        if self.param is not None:
            error["param"] = self.param
        return orjson.dumps({"error": error})

    def answer_headers(self, headers: dict[str, str] | None) -> dict[str, str] | None:
        """`headers` with the error's own added."""
        return {**(headers or {}), **self.headers} if self.headers else headers

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        response = web.Response(
            status=self.status, body=self.body(), content_type="application/json", headers=self.answer_headers(headers)
        )
        if self.close_connection:
            response.force_close()
        return response


def bad_request(message: str, param: str | None = None, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> ApiError:
    return ApiError(400, message, code, param)


def body_too_large(limit: int) -> ApiError:
    return ApiError(413, f"The request body is larger than {limit} bytes.", ErrorCode.REQUEST_TOO_LARGE)


def body_too_slow(timeout_s: float) -> ApiError:
    """The rest of the body may still trickle in: the connection is not reused after the answer."""
    message = f"The request body did not arrive within {timeout_s:g} s."
    return ApiError(408, message, ErrorCode.REQUEST_TIMEOUT, close_connection=True)


def not_found(message: str, code: ErrorCode = ErrorCode.NOT_FOUND, param: str | None = None) -> ApiError:
    return ApiError(404, message, code, param)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return ApiError(exc.status, exc.reason, _http_code(exc.status)).response(
            headers={"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        )
    except Exception:
        if request.writer.output_size > 0:
            # A response already started cannot become an error: aiohttp logs it and drops the connection.
            raise
        log.exception("unhandled error", extra={"method": request.method, "path": request.path})
        return ApiError(500, "The gateway failed to handle the request.", ErrorCode.INTERNAL_ERROR).response()


_HTTP_CODES = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    408: ErrorCode.REQUEST_TIMEOUT,
    413: ErrorCode.REQUEST_TOO_LARGE,
}


def _http_code(status: int) -> ErrorCode:
    return _HTTP_CODES.get(status, ErrorCode.HTTP_ERROR)
