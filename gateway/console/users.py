"""Console users: email + password (argon2id), created by `inventiv users create` or `inventiv up`.

Hashing costs tens of milliseconds of CPU and 64 MiB by design, so it runs in a thread: the event loop
also serves inference streams.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from sql.pool import transaction
from sql.queries import queries

# argon2-cffi's defaults are RFC 9106's second recommendation (t=3, 64 MiB, p=4).
_HASHER = PasswordHasher()
# NIST SP 800-63B asks for at least 8; 12, because a console user can start servers billed by the hour.
MIN_PASSWORD_LENGTH = 12
# Bytes of randomness in a generated password (the first admin's): 128 bits.
_GENERATED_BYTES = 16
FIRST_ADMIN_EMAIL = "admin@demo.local"
# Compared against when the email is unknown, so a wrong email costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(_GENERATED_BYTES))


class UserError(ValueError):
    """A user cannot be created as asked; the message says why."""


def normalize_email(email: str) -> str:
    return email.strip().lower()


def check_new_user(email: str, password: str) -> None:
    local, _, domain = email.partition("@")
    if not local or not domain or " " in email:
        raise UserError(f"{email!r} is not an email address")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def create_user(conn: aiopg.Connection, organization_id: str, email: str, password: str) -> dict[str, Any]:
    email = normalize_email(email)
    check_new_user(email, password)
    password_hash = await asyncio.to_thread(_HASHER.hash, password)
    row = await queries.users.insert_user(
        conn, organization_id=organization_id, email=email, password_hash=password_hash
    )
    if row is None:
        raise UserError(f"a user with email {email!r} exists already")
    return dict(row)


async def authenticate_user(pool: aiopg.Pool, email: str, password: str) -> dict[str, Any] | None:
    """The user row when the password is right, else None (unknown email, wrong password, disabled)."""
    async with pool.acquire() as conn:
        user = await queries.users.get_user_for_sign_in(conn, email=normalize_email(email))
    ok = await asyncio.to_thread(_verify, user["password_hash"] if user else _DUMMY_HASH, password)
    if user is None or not ok:
        return None
    if _HASHER.check_needs_rehash(user["password_hash"]):
        new_hash = await asyncio.to_thread(_HASHER.hash, password)
        async with pool.acquire() as conn:
            await queries.users.update_user_password_hash(conn, user_id=user["id"], password_hash=new_hash)
    return dict(user)


def generate_password() -> str:
    return secrets.token_urlsafe(_GENERATED_BYTES)


async def seed_first_admin(pool: aiopg.Pool, organization_slug: str) -> tuple[str, str] | None:
    """A first console user for the organization when it has none: (email, password), shown once."""
    async with transaction(pool) as conn:
        org = await queries.organizations.get_organization_by_slug(conn, slug=organization_slug)
        if org is None or await queries.users.count_users(conn, organization_id=org["id"]):
            return None
        password = generate_password()
        await create_user(conn, org["id"], FIRST_ADMIN_EMAIL, password)
    return FIRST_ADMIN_EMAIL, password
