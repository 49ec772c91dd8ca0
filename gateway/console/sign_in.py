"""Sign-in and sign-out.

The sign-in form has no session yet, so its CSRF token is a double submit: a random value in a short-lived
HttpOnly cookie and in the form; another site can make the browser post, never read the value to copy it.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from gateway import state
from gateway.console import sessions
from gateway.console.auth import CsrfRefused, error_page, signed_in
from gateway.console.render import render
from gateway.console.sessions import Session
from gateway.console.users import authenticate_user

SIGN_IN_CSRF_COOKIE = "inventiv_sign_in_csrf"
# Long enough to type a password, short enough that an old tab's form is simply shown again.
SIGN_IN_FORM_TTL_S = 3600
HOME = "/console/fleet"


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path only, never another site (`//evil`, `https://...`)."""
    if target and target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return HOME


def _form(request: web.Request, *, error: str | None = None, email: str = "", next_: str = HOME,
          status: int = 200) -> web.Response:
    token = sessions.new_token()
    response = render("sign_in.html", None, status=status, csrf_token=token, error=error, email=email, next=next_)
    response.set_cookie(SIGN_IN_CSRF_COOKIE, token,
                        **sessions.cookie_options(sessions.served_over_tls(request), SIGN_IN_FORM_TTL_S))
    return response


async def sign_in_page(request: web.Request) -> web.StreamResponse:
    if await sessions.request_session(request) is not None:
        raise web.HTTPSeeOther(safe_next(request.query.get("next")))
    return _form(request, next_=safe_next(request.query.get("next")))


async def sign_in(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    expected = request.cookies.get(SIGN_IN_CSRF_COOKIE, "")
    given = str(form.get(sessions.CSRF_FIELD, ""))
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        return error_page(CsrfRefused(), None)
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    next_ = safe_next(str(form.get("next", "")))
    user = await authenticate_user(request.app[state.DB], email, password)
    if user is None:
        return _form(request, error="Wrong email or password.", email=email, next_=next_, status=401)
    store = sessions.store(request)
    session = await store.create(user)
    response = web.HTTPSeeOther(next_)
    response.set_cookie(sessions.COOKIE, session.id,
                        **sessions.cookie_options(sessions.served_over_tls(request), store.ttl_s))
    response.del_cookie(SIGN_IN_CSRF_COOKIE, path="/")
    raise response


@signed_in
async def sign_out(request: web.Request, session: Session) -> web.StreamResponse:
    from gateway.console.playground import revoke_playground_key

    await revoke_playground_key(request.app, session)
    await sessions.store(request).delete(session)
    response = web.HTTPSeeOther("/console/sign-in")
    response.del_cookie(sessions.COOKIE, path="/")
    raise response
