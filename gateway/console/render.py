"""HTML from the console's Jinja templates, and its static files under a content-versioned path.

Static files are read once at import; their URL holds a hash of their bytes, so browsers keep them for a
year and a new release is fetched at once. Nothing is loaded from another site.
"""

from __future__ import annotations

import hashlib
import mimetypes
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from gateway.console.sessions import CSRF_FIELD, Session

_HERE = Path(__file__).parent
_STATIC = {p.name: p.read_bytes() for p in (_HERE / "static").iterdir() if p.is_file()}
STATIC_VERSION = hashlib.sha256(b"".join(_STATIC[name] for name in sorted(_STATIC))).hexdigest()[:12]
STATIC_PREFIX = "/console/static"
# Versioned URLs never change content: a year is what RFC 9111 suggests as "never expires".
_IMMUTABLE = "public, max-age=31536000, immutable"

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
)


def static_url(name: str) -> str:
    return f"{STATIC_PREFIX}/{STATIC_VERSION}/{name}"


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """`42s`, `5m`, `3h`, `2d` since `value`; `-` when unknown."""
    if value is None:
        return "-"
    seconds = int(((now or datetime.now(UTC)) - value).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


_ENV.globals.update(static_url=static_url, csrf_field=CSRF_FIELD)
_ENV.filters["ago"] = ago


# Pages load only this origin's files, run no inline script, post only here and are never framed (a
# framed page could be clicked through: terminate, revoke). no-store: pages show keys and fleet state.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def render(template: str, session: Session | None, status: int = 200, **context: Any) -> web.Response:
    html = _ENV.get_template(template).render(session=session, **context)
    return web.Response(text=html, status=status, content_type="text/html", headers=PAGE_HEADERS)


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if request.match_info["version"] != STATIC_VERSION or name not in _STATIC:
        raise web.HTTPNotFound()
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return web.Response(body=_STATIC[name], content_type=content_type, headers={"Cache-Control": _IMMUTABLE})
