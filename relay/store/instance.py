"""Which process owns a message: each Store holds a session advisory lock on its instance id.

Rows admitted through a Store carry its instance id (a connection setting the column defaults to;
migration message_instance). While the process lives its lock connection holds the lock; when it
dies, PostgreSQL releases it, and the recovery sweep of any instance settles that process's
'sending' rows at once (store.send.SendStore.stranded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

import asyncpg

from relay.store.base import DATABASE_ERRORS, StoreBase

log = logging.getLogger(__name__)

# The advisory lock's first key ('rely'); the second is the instance id. The two-key form never
# meets the migrator's one-key lock.
LOCK_CLASS = 0x72656C79
_RELOCK_SECONDS = 0.5


def new_instance_id() -> int:
    """A random positive int4: the id rows carry and the lock is taken on."""
    return secrets.randbelow(2**31 - 2) + 1


class InstanceStore(StoreBase):
    """The lock that says 'this instance is alive', kept through database restarts."""

    _lock_conn: asyncpg.Connection | None = None
    _keeper: asyncio.Task[None] | None = None

    async def hold_instance_lock(self) -> None:
        """Take the lock on a connection of its own, and take it again whenever that connection
        is lost (a database restart drops it with every other session)."""
        if self.instance_id is None or self.dsn is None:
            return
        await self._lock()
        self._keeper = asyncio.create_task(self._keep(), name="instance-lock")

    async def _lock(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("SELECT pg_advisory_lock($1, $2)", LOCK_CLASS, self.instance_id)
        except BaseException:
            await conn.close()
            raise
        self._lock_conn = conn

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(_RELOCK_SECONDS)
            conn = self._lock_conn
            if conn is not None and not conn.is_closed():
                try:
                    await conn.fetchval("SELECT 1")
                    continue
                except DATABASE_ERRORS:
                    pass
            with contextlib.suppress(Exception):
                if conn is not None:
                    conn.terminate()
            self._lock_conn = None
            try:
                await self._lock()
                log.warning("instance lock %s taken again after the database connection was lost",
                            self.instance_id)
            except DATABASE_ERRORS:
                continue

    async def release_instance_lock(self) -> None:
        """Stop keeping the lock and close its connection (the lock goes with it)."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                await self._lock_conn.close(timeout=2)
            self._lock_conn = None
