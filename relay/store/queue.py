"""The cap queue's queries: claim a due message under a row lock, settle or reschedule it, release."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, cast

import asyncpg

from relay.domain import QueuedItem
from relay.errors import StoreUnavailable
from relay.store.base import DATABASE_ERRORS, StoreBase, row, translated, unavailable
from relay.store.log import LOG_COLUMNS
from relay.store.send import FINALIZE_SQL

QUEUE_CHANNEL = "relay_queue"  # NOTIFY channel: queued messages became due


@translated
class Claim:
    """A queued message locked (FOR UPDATE SKIP LOCKED) in an open transaction until it is settled."""

    def __init__(self, conn: asyncpg.Connection, item: QueuedItem) -> None:
        self.conn = conn
        self.item = item

    async def finalize(self, status: str, refund: int, reply: str | None, failure_code: int | None,
                       refused: Sequence[str] = ()) -> bool:
        """Sent or failed for good (refund at most once, events written), committed with the claim."""
        return bool(await self.conn.fetchval(FINALIZE_SQL, self.item.message_id, status, refund, reply,
                                             failure_code, False, list(refused)))

    async def retry_at(self, when: datetime, reply: str, failure_code: int | None, deferred: bool) -> None:
        """A transient failure: try again not before when; its email.delivery_delayed event commits with it."""
        await self.conn.execute(
            "WITH m AS (UPDATE messages SET deliver_after = $2, attempts = attempts + 1, "
            "deferrals = deferrals + $3::int, upstream_reply = $4, failure_code = $5, "
            "updated_at = clock_timestamp() WHERE id = $1 RETURNING account_id, attempts) "
            "SELECT relay_event(m.account_id, $1, 'email.delivery_delayed', NULL, "
            " jsonb_build_object('attempt', m.attempts, 'nextAttemptAt', $2::timestamptz, 'reply', $4::text, "
            "                    'failureCode', $5::integer)) FROM m",
            self.item.message_id, when, int(deferred), reply, failure_code,
        )


@translated
class QueueStore(StoreBase):
    """Queued messages."""

    @contextlib.asynccontextmanager
    async def claim_queued(self, now: datetime, sender: str | None = None) -> AsyncIterator[Claim | None]:
        """Lock the next due queued message for the length of the block (None: nothing due).

        The lock is a row lock in an open transaction: another instance skips the row, and if this
        process dies the transaction rolls back and the message is simply queued again.
        """
        in_block = False
        try:
            async with self.pool.acquire() as pooled, pooled.transaction():
                conn = cast(asyncpg.Connection, pooled)  # the proxy stands in for the connection
                item = await _claim_one(conn, now, sender)
                in_block = True
                yield None if item is None else Claim(conn, item)
                in_block = False
        except DATABASE_ERRORS as exc:
            if in_block:  # the caller's own error, not the claim's
                raise
            raise unavailable(exc) from exc

    async def listen(self, channel: str, callback: Callable[[Any, int, str, object], None]) -> asyncpg.Connection:
        """A connection of its own (never a pool's: LISTEN is session state) listening on channel."""
        if self.dsn is None:
            raise StoreUnavailable("no DSN to open a listening connection with")
        conn: asyncpg.Connection = await asyncpg.connect(self.dsn)
        try:
            await conn.add_listener(channel, callback)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def release(self, now: datetime, sender: str | None = None) -> int:
        """Make queued messages due now (operator override of the cap) and wake the workers."""
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE messages SET deliver_after = $1 WHERE status = 'queued' AND deliver_after > $1 "
                "AND ($2::text IS NULL OR sender = $2)", now, sender,
            )
            await conn.execute(f"NOTIFY {QUEUE_CHANNEL}")
        return int(status.split()[-1])

    async def queue_depth(self) -> int:
        """How many messages are queued."""
        return int(await self.pool.fetchval("SELECT count(*) FROM messages WHERE status = 'queued'"))

    async def queued(self, sender: str | None = None) -> list[dict[str, Any]]:
        """Queued messages, oldest first."""
        records = await self.pool.fetch(
            f"SELECT {LOG_COLUMNS} FROM messages WHERE status = 'queued' "
            "AND ($1::text IS NULL OR sender = $1) ORDER BY created_at", sender,
        )
        return [row(r) for r in records]


async def _claim_one(conn: asyncpg.Connection, now: datetime, sender: str | None) -> QueuedItem | None:
    record = await conn.fetchrow(
        "SELECT m.id, m.account_id, b.mail_from, b.recipients, b.data, m.credits_charged, m.attempts, "
        "m.deferrals, m.created_at FROM messages m JOIN queued_bodies b ON b.message_id = m.id "
        "WHERE m.status = 'queued' AND m.deliver_after <= $1 AND ($2::text IS NULL OR m.sender = $2) "
        "ORDER BY m.deliver_after LIMIT 1 FOR UPDATE OF m SKIP LOCKED",
        now, sender,
    )
    if record is None:
        return None
    message_id: uuid.UUID = record["id"]
    return QueuedItem(message_id, record["account_id"], record["mail_from"], list(record["recipients"]),
                      bytes(record["data"]), record["credits_charged"], record["attempts"], record["deferrals"],
                      record["created_at"])
