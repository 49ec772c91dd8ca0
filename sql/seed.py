"""Load the demo catalog (sql/seed/demo_catalog.sql), idempotently."""

from __future__ import annotations

from pathlib import Path

import aiopg

from sql.pool import transaction
from sql.queries import queries

SEED_FILE = Path(__file__).parent / "seed" / "demo_catalog.sql"
DEMO_ORG = "demo"


async def seed_demo_catalog(pool: aiopg.Pool) -> str | None:
    """Load the catalog; create an admin key for the demo organization if it has none.

    Returns the new key (to be shown once), or None when an admin key already existed.
    """
    from sql.api_key_store import create_api_key

    async with transaction(pool) as conn:
        async with conn.cursor() as cur:
            await cur.execute(SEED_FILE.read_text())
        org = await queries.organizations.get_organization_by_slug(conn, slug=DEMO_ORG)
        if await queries.api_keys.count_admin_keys(conn, organization_id=org["id"]):
            return None
        created = await create_api_key(conn, org["id"], "demo admin", ["admin", "inference"])
        return created.key
