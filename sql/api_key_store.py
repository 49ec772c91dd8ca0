"""API keys: how they look, how they are hashed, how one is created.

A key is `ik_` + 43 URL-safe characters (256 bits of randomness). Only its SHA-256 is stored; the key
itself is returned once, at creation.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import aiopg

from sql.queries import queries

KEY_PREFIX = "ik_"
# Enough of the key to recognise it in a list, too little to matter for guessing.
SHOWN_PREFIX_LEN = 10
SCOPES = ("inference", "admin")


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    key: str
    row: dict[str, Any]


async def create_api_key(
    conn: aiopg.Connection, organization_id: str, name: str, scopes: list[str]
) -> CreatedKey:
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {SCOPES}")
    key = generate_key()
    row = await queries.api_keys.insert_api_key(
        conn,
        organization_id=organization_id,
        name=name,
        key_prefix=key[:SHOWN_PREFIX_LEN],
        key_hash=hash_key(key),
        scopes=scopes,
    )
    return CreatedKey(key=key, row=row)
