"""Console users: argon2id hashes, sign-in checks, the first admin."""

from __future__ import annotations

import aiopg
import pytest

from gateway.console.users import (
    FIRST_ADMIN_EMAIL,
    UserError,
    authenticate_user,
    check_new_user,
    create_user,
    seed_first_admin,
)
from sql.pool import transaction


@pytest.mark.parametrize(("email", "password", "error"), [
    ("a@b.c", "twelve chars", None),
    ("a@b.c", "eleven char", "at least 12"),
    ("no-at-sign", "twelve chars", "not an email"),
    ("@b.c", "twelve chars", "not an email"),
    ("a@", "twelve chars", "not an email"),
    ("a b@c.d", "twelve chars", "not an email"),
])
def test_new_user_checks(email: str, password: str, error: str | None) -> None:
    if error is None:
        check_new_user(email, password)
    else:
        with pytest.raises(UserError, match=error):
            check_new_user(email, password)


async def _org(pool: aiopg.Pool) -> str:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT id FROM organizations WHERE slug = 'demo'")
        return str((await cur.fetchone())[0])


async def test_password_is_stored_as_argon2id_and_checked(db_pool: aiopg.Pool) -> None:
    async with transaction(db_pool) as conn:
        await create_user(conn, await _org(db_pool), " Ops@Example.COM ", "a long password")
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT email, password_hash FROM users")
        email, password_hash = await cur.fetchone()
    assert email == "ops@example.com" and password_hash.startswith("$argon2id$")
    assert "a long password" not in password_hash
    assert (await authenticate_user(db_pool, "OPS@example.com", "a long password") or {})["email"] == email
    assert await authenticate_user(db_pool, email, "a long passworD") is None
    assert await authenticate_user(db_pool, "nobody@example.com", "a long password") is None
    with pytest.raises(UserError, match="exists already"):
        async with transaction(db_pool) as conn:
            await create_user(conn, await _org(db_pool), email, "another password")


async def test_a_disabled_user_cannot_sign_in(db_pool: aiopg.Pool) -> None:
    async with transaction(db_pool) as conn:
        await create_user(conn, await _org(db_pool), "gone@example.com", "a long password")
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("UPDATE users SET disabled_at = now()")
    assert await authenticate_user(db_pool, "gone@example.com", "a long password") is None


async def test_the_first_admin_is_made_once(db_pool: aiopg.Pool) -> None:
    first = await seed_first_admin(db_pool, "demo")
    assert first is not None and first[0] == FIRST_ADMIN_EMAIL
    assert await seed_first_admin(db_pool, "demo") is None
    assert await authenticate_user(db_pool, *first) is not None
