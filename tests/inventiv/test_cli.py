"""The `inventiv` command as an operator runs it: a real process against the test database."""

import os
import socket
import subprocess
import sys

import aiopg

from gateway.api_keys import hash_key


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


async def test_keys_create_prints_a_key_that_is_stored_only_as_a_hash(db_pool: aiopg.Pool, database_url: str) -> None:
    result = _inventiv("keys", "create", "--org", "demo", "--name", "ci", "--scope", "admin",
                       env={"INVENTIV_DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("ik_")
    async with db_pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT key_hash, scopes FROM api_keys WHERE name = 'ci'")
        assert await cur.fetchone() == (hash_key(key), ["admin"])
        await cur.execute("SELECT count(*) FROM api_keys WHERE key_hash = %s OR key_prefix = %s", (key, key))
        assert (await cur.fetchone())[0] == 0


async def test_keys_create_for_an_unknown_org_is_one_line(db_pool: aiopg.Pool, database_url: str) -> None:
    result = _inventiv("keys", "create", "--org", "nope", "--name", "x", env={"INVENTIV_DATABASE_URL": database_url})
    assert result.returncode == 2
    assert result.stderr.strip() == "inventiv: error: no organization with slug 'nope'"


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
