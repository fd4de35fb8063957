"""Scheduled sends: cancel one before it is delivered (refunded through relay_finalize)."""

from __future__ import annotations

import uuid

from relay.store.base import StoreBase, translated

CANCELLED_REPLY = "cancelled by the sender before its scheduled time"


@translated
class ScheduleStore(StoreBase):
    """Scheduled messages."""

    async def cancel_scheduled(self, message_id: uuid.UUID, account_id: int) -> bool:
        """Cancel the account's scheduled message and refund it; False when it is not (or no longer)
        scheduled. A delivery in progress holds the row lock: this waits for it and then sees it final."""
        return bool(await self.pool.fetchval(
            "SELECT relay_finalize(m.id, 'failed', m.credits_charged, $3, NULL, false) FROM messages m "
            "WHERE m.id = $1 AND m.account_id = $2 AND m.status = 'queued' AND m.scheduled_at IS NOT NULL",
            message_id, account_id, CANCELLED_REPLY,
        ))
