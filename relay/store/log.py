"""Reading the message log."""

from __future__ import annotations

import uuid
from typing import Any

from relay.store.base import StoreBase, row, translated

LOG_FIELDS = (
    "id", "channel", "status", "key_id", "account_id", "sender", "recipient_count", "size_bytes",
    "credits_charged", "credits_refunded", "upstream_reply", "failure_code", "deliver_after",
    "attempts", "created_at", "updated_at", "finished_at",
)
LOG_COLUMNS = ", ".join(LOG_FIELDS)


@translated
class LogStore(StoreBase):
    """Log rows, one or many."""

    async def message(self, message_id: uuid.UUID) -> dict[str, Any] | None:
        """One log row."""
        record = await self.pool.fetchrow(f"SELECT {LOG_COLUMNS} FROM messages WHERE id = $1", message_id)
        return None if record is None else row(record)

    async def logs(self, *, account_id: int | None = None, status: str | None = None,
                   channel: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Log rows, newest first, filtered."""
        records = await self.pool.fetch(
            f"SELECT {LOG_COLUMNS} FROM messages "
            "WHERE ($1::bigint IS NULL OR account_id = $1) AND ($2::text IS NULL OR status = $2) "
            "AND ($3::text IS NULL OR channel = $3) ORDER BY created_at DESC LIMIT $4",
            account_id, status, channel, limit,
        )
        return [row(r) for r in records]
