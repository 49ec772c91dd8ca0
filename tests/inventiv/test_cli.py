"""The `inventiv` command as an operator runs it: a real process against the test database and Redis."""

import asyncio
import os
import socket
import subprocess
import sys
from typing import Any

import aiopg
import redis.asyncio as aioredis
from waiting import wait_until

from gateway import state
from gateway.app import create_app
from inventiv import redis_keys
from inventiv.settings import Settings
from sql.api_key_store import hash_key


def _inventiv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTIV_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "inventiv", "--log-format", "json", *args],
        env=full_env, capture_output=True, text=True, timeout=60,
    )


async def test_migrate_is_idempotent(db_pool: aiopg.Pool, database_url: str) -> None:
    result = _inventiv("migrate", env={"INVENTIV_DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "applied 0 migration(s)"


async def test_seed_twice_keeps_one_catalog_and_prints_the_admin_key_once(
    db_pool: aiopg.Pool, database_url: str
) -> None:
    env = {"INVENTIV_DATABASE_URL": database_url}
    first = _inventiv("seed", env=env)
    second = _inventiv("seed", env=env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "admin key" in first.stdout
    assert "admin key" not in second.stdout
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT count(*) FROM instance_types")
        assert (await cur.fetchone())[0] == 7
        await cur.execute("SELECT count(*) FROM models")
        assert (await cur.fetchone())[0] == 3


async def test_seed_prints_the_first_console_user_once_and_the_password_signs_in(
    db_pool: aiopg.Pool, database_url: str
) -> None:
    from gateway.console.users import authenticate_user

    env = {"INVENTIV_DATABASE_URL": database_url}
    first, second = _inventiv("seed", env=env), _inventiv("seed", env=env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    line = next(x for x in first.stdout.splitlines() if x.startswith("console user"))
    email, password = line.rsplit(": ", 1)[1].split(" / ")
    assert "console user" not in second.stdout
    assert await authenticate_user(db_pool, email, password) is not None


def _inventiv_stdin(stdin: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTIV_")} | env
    return subprocess.run([sys.executable, "-m", "inventiv", *args], env=full_env, input=stdin,
                          capture_output=True, text=True, timeout=60)


async def test_users_create_reads_the_password_from_stdin_and_refuses_a_second_account(
    db_pool: aiopg.Pool, database_url: str
) -> None:
    from gateway.console.users import authenticate_user

    env = {"INVENTIV_DATABASE_URL": database_url}
    args = ("users", "create", "--org", "demo", "--email", "Ops@Example.com", "--password-stdin")
    made = _inventiv_stdin("a long enough secret\n", *args, env=env)
    assert made.returncode == 0, made.stderr
    assert await authenticate_user(db_pool, "ops@example.com", "a long enough secret") is not None
    again = _inventiv_stdin("a long enough secret\n", *args, env=env)
    assert (again.returncode, again.stderr.strip()) == (
        2, "inventiv: error: a user with email 'ops@example.com' exists already")
    short = _inventiv_stdin("short\n", "users", "create", "--org", "demo", "--email", "b@example.com",
                            "--password-stdin", env=env)
    assert short.returncode == 2 and "at least 12 characters" in short.stderr


def _services_env(settings: Settings) -> dict[str, str]:
    """The test database and this test's Redis prefix, so no command starts embedded services here."""
    assert settings.database_url and settings.redis_url
    return {"INVENTIV_DATABASE_URL": settings.database_url, "INVENTIV_REDIS_URL": settings.redis_url,
            "INVENTIV_REDIS_PREFIX": settings.redis_prefix}


async def test_keys_create_prints_a_key_that_is_stored_only_as_a_hash(db_pool: aiopg.Pool, settings: Settings) -> None:
    result = _inventiv("keys", "create", "--org", "demo", "--name", "ci", "--scope", "admin",
                       env=_services_env(settings))
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("ik_")
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT key_hash, scopes FROM api_keys WHERE name = 'ci'")
        assert await cur.fetchone() == (hash_key(key), ["admin"])
        await cur.execute("SELECT count(*) FROM api_keys WHERE key_hash = %s OR key_prefix = %s", (key, key))
        assert (await cur.fetchone())[0] == 0


async def test_keys_create_for_an_unknown_org_is_one_line(db_pool: aiopg.Pool, settings: Settings) -> None:
    result = _inventiv("keys", "create", "--org", "nope", "--name", "x", env=_services_env(settings))
    assert result.returncode == 2
    assert result.stderr.strip() == "inventiv: error: no organization with slug 'nope'"


async def test_keys_create_announces_the_key_as_the_key_api_does(
    db_pool: aiopg.Pool, settings: Settings, redis: aioredis.Redis
) -> None:
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(redis_keys.key(settings, redis_keys.KEYS_CHANGED))
        await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        args = ("keys", "create", "--org", "demo", "--name", "announced")
        result = await asyncio.to_thread(_inventiv, *args, env=_services_env(settings))
        assert result.returncode == 0, result.stderr
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT id::text FROM api_keys WHERE name = 'announced'")
        (key_id,) = await cur.fetchone()
    assert message is not None and message["data"].decode() == key_id
    assert result.stdout.startswith("ik_")


async def test_a_key_made_by_the_cli_works_at_once_on_a_running_gateway(
    aiohttp_client: Any, db_pool: aiopg.Pool, settings: Settings, redis: aioredis.Redis
) -> None:
    # Its own reload comes an hour later: only the notification can let the new key in.
    gateway = await aiohttp_client(create_app(settings.replace(routing_refresh_s=3600.0)))
    channel = redis_keys.key(settings, redis_keys.KEYS_CHANGED)

    async def subscribed() -> int:
        return int((await redis.pubsub_numsub(channel))[0][1])

    await wait_until(subscribed, timeout_s=2, interval_s=0.02, what="the gateway to subscribe to key changes")
    env = {**_services_env(settings), "INVENTIV_ROUTING_REFRESH_S": "3600"}
    result = await asyncio.to_thread(_inventiv, "keys", "create", "--org", "demo", "--name", "e2e", env=env)
    assert result.returncode == 0, result.stderr
    headers = {"Authorization": f"Bearer {result.stdout.strip()}"}

    async def let_in() -> int | None:
        async with gateway.get("/v1/models", headers=headers) as resp:
            return None if resp.status == 401 else resp.status

    assert await wait_until(let_in, timeout_s=2, what="the gateway to know the new key") == 200


async def test_keys_create_with_redis_down_still_makes_the_key_and_says_so(
    db_pool: aiopg.Pool, settings: Settings
) -> None:
    env = {**_services_env(settings), "INVENTIV_REDIS_URL": f"redis://127.0.0.1:{_free_port()}/0"}
    result = _inventiv("keys", "create", "--org", "demo", "--name", "offline", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("ik_")
    [warning] = result.stderr.strip().splitlines()
    assert warning.startswith("inventiv: warning: running gateways were not notified (")
    assert warning.endswith("they accept the key within 1 s")
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT key_hash FROM api_keys WHERE name = 'offline'")
        assert await cur.fetchone() == (hash_key(result.stdout.strip()),)


def test_unreachable_database_is_one_line_without_traceback() -> None:
    port = _free_port()
    result = _inventiv("migrate", env={"INVENTIV_DATABASE_URL": f"postgresql://u:secret@127.0.0.1:{port}/x"})
    assert result.returncode == 2
    assert result.stderr.startswith("inventiv: error: cannot connect to Postgres (postgresql://u@127.0.0.1")
    assert "secret" not in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_setting_is_one_line() -> None:
    result = _inventiv("migrate", env={"INVENTIV_GATEWAY_PORT": "eighty"})
    assert result.returncode == 2
    assert result.stderr.strip() == "inventiv: error: INVENTIV_GATEWAY_PORT must be a int, not 'eighty'"


def test_gateway_on_a_port_in_use_is_one_line(database_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _inventiv("gateway", "--port", str(port), "--workers", "1",
                           env={"INVENTIV_DATABASE_URL": database_url, "INVENTIV_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2
    assert result.stderr.strip() == f"inventiv: error: port {port} on 127.0.0.1 is already in use"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_orgs_create_then_a_key_for_it_that_authenticates_as_it(
    db_pool: aiopg.Pool, settings: Settings, aiohttp_client: Any
) -> None:
    env = _services_env(settings)
    created = _inventiv("orgs", "create", "--slug", "acme", "--name", "Acme", env=env)
    assert created.returncode == 0, created.stderr
    org_id = created.stdout.strip()
    key = _inventiv("keys", "create", "--org", "acme", "--name", "acme admin", "--scope", "admin", env=env)
    assert key.returncode == 0, key.stderr
    client = await aiohttp_client(create_app(settings))
    async with client.get("/organizations", headers={"Authorization": f"Bearer {key.stdout.strip()}"}) as resp:
        assert resp.status == 200
        assert [o["id"] for o in (await resp.json())["data"]] == [org_id]
    again = _inventiv("orgs", "create", "--slug", "acme", "--name", "Acme", env=env)
    assert (again.returncode, again.stderr.strip()) == (
        2, "inventiv: error: an organization with slug 'acme' exists already"
    )
    bad = _inventiv("orgs", "create", "--slug", "Acme Inc", "--name", "x", env=env)
    assert bad.returncode == 2 and "slug" in bad.stderr


async def test_orgs_limits_set_clear_and_list(db_pool: aiopg.Pool, settings: Settings) -> None:
    env = _services_env(settings)
    result = _inventiv("orgs", "limits", "demo", "--rpm", "600", "--max-instances", "3", "--monthly-budget", "250",
                       env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "demo: requests_per_minute=600 max_instances=3 monthly_budget=250"
    cleared = _inventiv("orgs", "limits", "demo", "--rpm", "none", env=env)
    assert cleared.returncode == 0, cleared.stderr
    listed = _inventiv("orgs", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert line.startswith("demo\t")
    assert line.endswith("rpm=none tpm=none concurrency=none max_instances=3 max_gpus=none "
                         "monthly_budget=250.00 platform")
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT requests_per_minute, max_instances FROM organizations WHERE slug = 'demo'")
        assert await cur.fetchone() == (None, 3)
    nothing = _inventiv("orgs", "limits", "demo", env=env)
    assert (nothing.returncode, nothing.stderr.strip()) == (2, "inventiv: error: give at least one limit to set "
                                                               "(see --help)")
    zero = _inventiv("orgs", "limits", "demo", "--rpm", "0", env=env)
    assert zero.returncode == 2 and "requests_per_minute must be at least 1" in zero.stderr


async def test_keys_limits_reach_a_running_gateway(
    db_pool: aiopg.Pool, settings: Settings, aiohttp_client: Any
) -> None:
    env = _services_env(settings)
    key = _inventiv("keys", "create", "--org", "demo", "--name", "bot", env=env).stdout.strip()
    client = await aiohttp_client(create_app(settings))
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT id FROM api_keys WHERE name = 'bot'")
        (key_id,) = await cur.fetchone()
    result = _inventiv("keys", "limits", str(key_id), "--tpm", "5000", "--fail-mode", "closed", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{key_id}: tokens_per_minute=5000 limits_fail_mode=closed"
    app = client.server.app
    assert app is not None
    # The gateway hears of it through Redis (or its next one-second poll).
    def limited() -> Any:
        principal = app[state.PLANE].keys.lookup(key)
        return principal if principal is not None and principal.limits is not None else None

    principal = await wait_until(limited, timeout_s=5, what="the gateway to know the key's limits")
    assert (principal.limits.key.tokens_per_minute, principal.limits.fail_closed) == (5000, True)
    unknown = _inventiv("keys", "limits", "not-an-id", "--rpm", "1", env=env)
    assert unknown.returncode == 2 and "not an API key id" in unknown.stderr
