"""API key authentication against an in-memory table of SHA-256 hashes.

The table is reloaded from Postgres every second with the rest of the routing tables
(`gateway.plane`), and at once when a key change is published, so a key revoked on any process stops
working everywhere within 2 s, and a request never waits on the database. Keys created or revoked
through this process's API take effect here at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import cast

from aiohttp import web

from gateway.error_codes import ErrorCode
from gateway.errors import ApiError
from gateway.limits import KeyLimits, key_limits_from_row

_BEARER = "Bearer "


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    organization_id: str
    organization_slug: str
    scopes: frozenset[str]
    # The key's and its organization's rate limits; None: neither sets any (gateway/limits.py).
    limits: KeyLimits | None = None
    # Its organization is a platform one: its admin keys manage every organization (control/access.py).
    is_platform: bool = False

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes


class KeyTable:
    def __init__(self) -> None:
        self._by_hash: dict[str, Principal] = {}

    def lookup(self, key: str) -> Principal | None:
        return self._by_hash.get(hashlib.sha256(key.encode()).hexdigest())

    def replace(self, rows: list[dict[str, object]]) -> None:
        self._by_hash = {
            str(r["key_hash"]): Principal(
                key_id=str(r["id"]),
                organization_id=str(r["organization_id"]),
                organization_slug=str(r["organization_slug"]),
                scopes=frozenset(cast(list[str], r["scopes"])),
                limits=key_limits_from_row(r),
                is_platform=bool(r.get("organization_is_platform")),
            )
            for r in rows
        }

    def add(self, key_hash: str, principal: Principal) -> None:
        self._by_hash = {**self._by_hash, key_hash: principal}

    def revoke(self, key_id: str) -> None:
        self._by_hash = {h: p for h, p in self._by_hash.items() if p.key_id != key_id}


def authenticate(keys: KeyTable, authorization: str | None) -> Principal:
    if not authorization or not authorization.startswith(_BEARER):
        raise ApiError(401, "Missing API key: send 'Authorization: Bearer <key>'.", ErrorCode.MISSING_API_KEY)
    principal = keys.lookup(authorization[len(_BEARER):].strip())
    if principal is None:
        raise ApiError(401, "Invalid or revoked API key.", ErrorCode.INVALID_API_KEY)
    return principal


def require_admin(keys: KeyTable, request: web.Request) -> Principal:
    principal = authenticate(keys, request.headers.get("Authorization"))
    if not principal.is_admin:
        raise ApiError(403, "This API key has no admin scope.", ErrorCode.INSUFFICIENT_SCOPE)
    return principal
