"""The Store: one connection pool and every concern's queries, composed from one mixin each.

A new concern is a module relay/store/<concern>.py with a mixin class, added to Store's bases.
Every public coroutine of a mixin raises StoreUnavailable, never a driver error (store/base.py).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import asyncpg

from relay.store.admin import AdminStore
from relay.store.dashboard import DashboardStore
from relay.store.domains import DomainStore
from relay.store.events import EventStore
from relay.store.instance import InstanceStore, new_instance_id
from relay.store.log import LogStore
from relay.store.queue import QueueStore
from relay.store.retention import RetentionStore
from relay.store.routes import RouteStore
from relay.store.schedule import ScheduleStore
from relay.store.send import SendStore
from relay.store.users import UserStore
from relay.store.webhooks import WebhookStore


async def _keep(conn: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to reset (see Store.connect)."""


class Store(AdminStore, SendStore, LogStore, QueueStore, RetentionStore, EventStore,
            WebhookStore, RouteStore, InstanceStore, DomainStore, UserStore, DashboardStore, ScheduleStore):
    """A connection pool plus the queries; one instance per process."""

    def __init__(self, pool: asyncpg.Pool, dsn: str | None = None, instance_id: int | None = None) -> None:
        self.pool = pool
        self.dsn = dsn
        self.instance_id = instance_id
        self._init_send()

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> Store:
        """Open a pool to the database at dsn."""
        # reset=_keep: the queries of relay change no session state (no LISTEN, SET, cursors or
        # advisory locks on pool connections; the queue worker LISTENs on a connection of its own),
        # so the default reset query, a round trip on every release, is skipped; asyncpg still
        # rolls back an open transaction on release.
        # relay.instance: what the messages rows admitted on these connections name as their
        # instance (store/instance.py), set once per connection at its start: no round trip
        instance_id = new_instance_id()
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, reset=_keep,
                                         server_settings={"relay.instance": str(instance_id)})
        assert pool is not None
        store = cls(pool, dsn, instance_id)
        try:
            await store.hold_instance_lock()
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        """Close the pool, waiting for queries in flight, and give up the instance lock."""
        await self.pool.close()
        await self.release_instance_lock()


def as_dict(value: Any) -> dict[str, Any]:
    """A store record as a plain dict (for --json)."""
    return asdict(value)
