"""Whole databases on a Postgres server: create, drop, and point a URL at one.

Used by the embedded default (its `inventiv` database), the test fixtures (a database per session)
and the benchmark (a throwaway database per run). Names go through psycopg2's identifier quoting.
"""

from __future__ import annotations

from contextlib import closing
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database (host:port and socket URLs alike)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def create_database(server_url: str, name: str, *, if_missing: bool = False) -> None:
    with closing(psycopg2.connect(server_url)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            if if_missing:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is not None:
                    return
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(server_url: str, name: str) -> None:
    """Drop it, disconnecting whoever is still connected (a throwaway database only)."""
    with closing(psycopg2.connect(server_url)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
