"""What the console's tests read from its pages: the user they sign in as and the CSRF field."""

from __future__ import annotations

import re

EMAIL = "ops@demo.example"
PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF field in the page"
    return match.group(1)
