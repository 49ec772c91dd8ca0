"""A named query run as a server-side prepared statement: parsed and planned once per connection.

For a query run often on the same connections whose planning is a large share of its cost: the usage
writer's batch INSERT, a statement of five CTEs, which Postgres planned in 0.6 ms on every batch
(EXPLAIN ANALYZE), about a quarter of a 100-record batch's CPU and most of a small one's. The query stays
in its .sql file; `PREPARE` is sent the first time a connection runs it, `EXECUTE` from then on.

A connection that lost the statement (a pooler such as PgBouncer in transaction mode hands each
transaction any server connection; `DISCARD ALL`) answers `EXECUTE` with "prepared statement does not
exist": the query is then prepared again and retried once, and where even that fails it is run as plain
SQL from then on, logged once. Nothing is lost either way, only the planning saved.
"""

from __future__ import annotations

import hashlib
import logging
import re
import weakref
from typing import Any

import aiopg
import psycopg2.errors

from sql.adapter import AiopgAdapter

log = logging.getLogger(__name__)

# The project's aiosql adapter runs the statements, as it runs every loaded query.
_ADAPTER = AiopgAdapter()
# psycopg2's placeholders in a query aiosql has loaded (sql/adapter.py turns `:name` into these).
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


class PreparedQuery:
    """`query` is an aiosql query (`queries.<file>.<name>`) returning one value, run on an aiopg connection."""

    def __init__(self, name: str, query: Any) -> None:
        self._sql = str(query.sql)
        # The statement's name carries its text's digest: a process running another version of the query
        # (a rolling upgrade behind a pooler that shares server connections) never executes this one's.
        self.name = f"{name}_{hashlib.blake2b(self._sql.encode(), digest_size=6).hexdigest()}"
        self._parameters: list[str] = []

        def numbered(match: re.Match[str]) -> str:
            if match[1] not in self._parameters:
                self._parameters.append(match[1])
            return f"${self._parameters.index(match[1]) + 1}"

        # Postgres infers each parameter's type from its use (`$1::json`). The adapter sends PREPARE with
        # an empty set of parameters, so psycopg2 still turns an escaped `%%` into `%`.
        body = _PLACEHOLDER.sub(numbered, self._sql)
        self._prepare = f"PREPARE {self.name} AS {body}"
        self._execute = f"EXECUTE {self.name} ({', '.join(f'%({p})s' for p in self._parameters)})"
        # Connections this query is prepared on; a closed one is forgotten with its object.
        self._prepared: weakref.WeakSet[aiopg.Connection] = weakref.WeakSet()
        self._plain = False

    @property
    def plain(self) -> bool:
        """Whether the query has fallen back to plain SQL (its statement kept being lost)."""
        return self._plain

    async def value(self, conn: aiopg.Connection, **parameters: Any) -> Any:
        """The first column of the first row the query returns (None for no row)."""
        if self._plain:
            return await _ADAPTER.select_value(conn, self.name, self._sql, parameters)
        if conn not in self._prepared:
            await self._prepare_on(conn)
        try:
            return await _ADAPTER.select_value(conn, self.name, self._execute, parameters)
        except psycopg2.errors.InvalidSqlStatementName:
            pass
        await self._prepare_on(conn)
        try:
            return await _ADAPTER.select_value(conn, self.name, self._execute, parameters)
        except psycopg2.errors.InvalidSqlStatementName:
            self._plain = True
            log.warning("prepared statements do not last on these connections (a pooler in transaction mode?); "
                        "running the query as plain SQL", extra={"query": self.name})  # fmt: skip
            return await _ADAPTER.select_value(conn, self.name, self._sql, parameters)

    async def _prepare_on(self, conn: aiopg.Connection) -> None:
        try:
            # PREPARE returns no row: run as a statement, not a query.
            await _ADAPTER.insert_update_delete(conn, self.name, self._prepare, ())
        except psycopg2.errors.DuplicatePreparedStatement:
            # Already there (a pooled server connection that another client object prepared it on).
            pass
        self._prepared.add(conn)

