"""Who is signed in: the session cookie on console pages and on the control API.

On the control API a key in `Authorization` wins and needs no CSRF token; without one, a live session
cookie stands for its user, and unsafe methods then need the session's token in `X-CSRF-Token`. This
runs only on the control API's and the console's routes, never on `/v1`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from gateway.console import sessions
from gateway.console.render import render
from gateway.console.sessions import Session
from gateway.control.access import SESSION_PRINCIPAL
from gateway.error_codes import ErrorCode
from gateway.errors import ApiError, Handler

SIGN_IN_PATH = "/console/sign-in"
PageHandler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


class CsrfRefused(ApiError):
    def __init__(self) -> None:
        super().__init__(403, f"Missing or wrong CSRF token: send the session's token in {sessions.CSRF_HEADER} "
                              f"or the '{sessions.CSRF_FIELD}' form field.", ErrorCode.CSRF_TOKEN_INVALID)


def accept_session(handler: Handler) -> Handler:
    """A control API handler that also accepts the console's session cookie instead of a key."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        if "Authorization" not in request.headers and sessions.COOKIE in request.cookies:
            session = await sessions.request_session(request)
            if session is None:
                raise ApiError(401, "The console session expired or ended; sign in again.", ErrorCode.SESSION_EXPIRED)
            if request.method not in sessions.SAFE_METHODS and not sessions.csrf_ok(
                session, request.headers.get(sessions.CSRF_HEADER)
            ):
                raise CsrfRefused()
            request[SESSION_PRINCIPAL] = sessions.session_principal(session)
        return await handler(request)

    return wrapped


def signed_in(handler: PageHandler) -> Handler:
    """A console page for signed-in users: others go to the sign-in page (pages) or get a 401 (fragments
    and forms); a form without the session's CSRF token is refused."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = await sessions.request_session(request)
        if session is None:
            # A browser's navigation or form post goes to sign in (back here after, for a page); the
            # live-refresh script gets a 401 and reloads the page.
            if request.headers.get("Accept", "").startswith("text/html"):
                back = f"?next={quote(request.path_qs, safe='')}" if request.method == "GET" else ""
                raise web.HTTPSeeOther(SIGN_IN_PATH + back)
            raise ApiError(401, "Not signed in, or the session expired; sign in again.", ErrorCode.SESSION_EXPIRED)
        if request.method not in sessions.SAFE_METHODS:
            given = request.headers.get(sessions.CSRF_HEADER)
            if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                given = str((await request.post()).get(sessions.CSRF_FIELD, ""))
            if not sessions.csrf_ok(session, given):
                return error_page(CsrfRefused(), None)
        request[SESSION_PRINCIPAL] = sessions.session_principal(session)
        try:
            return await handler(request, session)
        except ApiError as exc:
            return error_page(exc, session)

    return wrapped


_TITLES = {400: "That request is not right", 403: "Refused", 404: "Not found", 409: "Not now"}


def error_page(exc: ApiError, session: Session | None) -> web.Response:
    """The API's error as a page: same status, message and code as the JSON the API would send."""
    return render("error.html", session, status=exc.status, title=_TITLES.get(exc.status, "Something failed"),
                  message=exc.message, code=exc.code)
