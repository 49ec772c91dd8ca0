"""The operator's commands for tenants: `inventiv orgs create|list|limits` and `inventiv keys limits`.

They write Postgres directly, as `inventiv keys create` does (the operator holds the database, no admin
key is needed), then tell running gateways to reload their key table, which carries the limits.
Limit options take a number, or `none` to clear the limit (unlimited); options not given stay as they are.
"""

from __future__ import annotations

import argparse
import re
import uuid
from decimal import Decimal
from typing import Any

from inventiv.command_error import CommandError
from inventiv.key_announcement import announce_key
from inventiv.services import open_pool
from inventiv.settings import Settings

# The parser imports this module for every command: the database side is imported where it is used.

# The organizations.slug column's own rule.
SLUG = r"[a-z0-9][a-z0-9-]*"
# option name -> column; `orgs list` shows them in this order.
ORG_LIMITS = {
    "rpm": "requests_per_minute",
    "tpm": "tokens_per_minute",
    "concurrency": "concurrent_requests",
    "max_instances": "max_instances",
    "max_gpus": "max_gpus",
    "monthly_budget": "monthly_budget",
}
KEY_LIMITS = {"rpm": "requests_per_minute", "tpm": "tokens_per_minute", "concurrency": "concurrent_requests"}


def limit_value(text: str) -> int | None:
    """argparse type of a limit: a whole number >= 0, or `none` for unlimited."""
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'none', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("limits cannot be negative")
    return value


def add_limit_options(parser: argparse.ArgumentParser, names: dict[str, str]) -> None:
    for option, column in names.items():
        parser.add_argument(f"--{option.replace('_', '-')}", dest=option, type=limit_value, default=argparse.SUPPRESS,
                            metavar="N|none", help=column.replace("_", " "))


def _changes(args: argparse.Namespace, names: dict[str, str]) -> dict[str, Any]:
    changes = {column: getattr(args, option) for option, column in names.items() if hasattr(args, option)}
    for column, value in changes.items():
        if value == 0 and column in ("requests_per_minute", "tokens_per_minute", "concurrent_requests"):
            raise CommandError(f"{column} must be at least 1 (or none)")
    return changes


async def create_organization(settings: Settings, slug: str, name: str, platform: bool) -> int:
    from sql.queries import queries

    if not re.fullmatch(SLUG, slug):
        raise CommandError(f"a slug is lowercase letters, digits and dashes, not {slug!r}")
    async with open_pool(settings) as pool, pool.acquire() as conn:
        row = await queries.organizations.insert_organization(conn, slug=slug, name=name, is_platform=platform)
    if row is None:
        raise CommandError(f"an organization with slug {slug!r} exists already")
    print(row["id"])
    return 0


async def list_organizations(settings: Settings) -> int:
    from sql.queries import fetch_all, queries

    async with open_pool(settings) as pool, pool.acquire() as conn:
        rows = await fetch_all(queries.organizations.list_organization_details(
            conn, organization_id=None, after_slug=None, limit=10_000
        ))
    for row in rows:
        limits = " ".join(f"{option}={_shown(row[column])}" for option, column in ORG_LIMITS.items())
        platform = " platform" if row["is_platform"] else ""
        print(f"{row['slug']}\t{row['id']}\t{row['name']}\t{limits}{platform}")
    return 0


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    return f"{value:.2f}" if isinstance(value, Decimal) else str(value)


async def set_organization_limits(settings: Settings, slug: str, args: argparse.Namespace) -> int:
    from gateway.control.organizations import update_params
    from sql.pool import transaction
    from sql.queries import queries

    changes = _changes(args, ORG_LIMITS)
    if not changes:
        raise CommandError("give at least one limit to set (see --help)")
    async with open_pool(settings) as pool, transaction(pool) as conn:
        organization = await queries.organizations.get_organization_by_slug(conn, slug=slug)
        if organization is None:
            raise CommandError(f"no organization with slug {slug!r}")
        await queries.organizations.update_organization(
            conn, organization_id=organization["id"], **update_params(changes)
        )
    print(f"{slug}: " + " ".join(f"{column}={_shown(value)}" for column, value in changes.items()))
    await announce_key(settings, str(organization["id"]))
    return 0


async def set_key_limits(settings: Settings, key_id: str, args: argparse.Namespace) -> int:
    from sql.queries import queries

    changes = _changes(args, KEY_LIMITS)
    if getattr(args, "fail_mode", None) is not None:
        changes["limits_fail_mode"] = args.fail_mode
    if not changes:
        raise CommandError("give at least one limit to set (see --help)")
    params: dict[str, Any] = {}
    for column in (*KEY_LIMITS.values(), "limits_fail_mode"):
        params[f"set_{column}"] = column in changes
        params[column] = changes.get(column)
    try:
        uuid.UUID(key_id)
    except ValueError:
        raise CommandError(f"{key_id!r} is not an API key id (a UUID, as GET /api_keys lists them)") from None
    async with open_pool(settings) as pool, pool.acquire() as conn:
        row = await queries.api_keys.update_api_key_limits(conn, key_id=key_id, **params)
    if row is None:
        raise CommandError(f"no API key with id {key_id!r}")
    print(f"{key_id}: " + " ".join(f"{column}={_shown(value)}" for column, value in changes.items()))
    await announce_key(settings, key_id)
    return 0


