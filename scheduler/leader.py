"""Leader election: the process holding a Postgres session-level advisory lock is the leader.

The lock lives as long as the connection that took it, so a leader that dies (or loses its connection)
releases it at once and a standby takes over on its next try.
"""

from __future__ import annotations

import logging

import aiopg
import psycopg2

log = logging.getLogger(__name__)

# Fixed key shared by every scheduler of this database; distinct from the migration lock.
LEADER_LOCK_KEY = 0x1A7E_5C4E


class LeaderLock:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: aiopg.Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def try_acquire(self) -> bool:
        """True if this process is (still) the leader."""
        if self._conn is not None:
            if await self._alive():
                return True
            await self.release()
        try:
            conn = await aiopg.connect(self._dsn, timeout=5)
        except psycopg2.OperationalError:
            log.warning("leader election: database unreachable")
            return False
        async with conn.cursor() as cur:
            await cur.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,))
            row = await cur.fetchone()
        if row and row[0]:
            self._conn = conn
            log.info("became the scheduler leader")
            return True
        await conn.close()
        return False

    async def _alive(self) -> bool:
        """Whether the session holding the lock is still there; a lost one is logged, whether aiopg saw
        its connection close or the check's query fails."""
        assert self._conn is not None
        if not self._conn.closed:
            try:
                async with self._conn.cursor() as cur:
                    await cur.execute("SELECT 1")
                return True
            except psycopg2.Error:
                pass
        log.warning("lost the leader connection")
        return False

    async def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            if not conn.closed:
                await conn.close()
