"""Events, recipients and the suppression list: reading them, recording a bounce, managing the list."""

from __future__ import annotations

import json
import uuid
from typing import Any

from relay.errors import StoreError
from relay.store.base import StoreBase, row, translated

EVENT_COLUMNS = "id, type, created_at AS timestamp, message_id, recipient, data"
SUPPRESSION_COLUMNS = "account_id, address, reason, message_id, created_at, expires_at"
REASONS = ("hard_bounce", "complaint", "manual")


def _event(record: Any) -> dict[str, Any]:
    out = row(record)
    out["data"] = json.loads(out["data"]) if isinstance(out["data"], str) else out["data"]
    return out


@translated
class EventStore(StoreBase):
    """Events and recipients of messages; the accounts' suppression lists."""

    async def events(self, message_id: uuid.UUID) -> list[dict[str, Any]]:
        """A message's events, oldest first."""
        records = await self.pool.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE message_id = $1 ORDER BY created_at, id", message_id)
        return [_event(r) for r in records]

    async def recipients(self, message_id: uuid.UUID) -> list[dict[str, Any]]:
        """A message's recipients (address, status), in the order given."""
        records = await self.pool.fetch(
            "SELECT r.address, coalesce(r.status, m.status) AS status FROM message_recipients r "
            "JOIN messages m ON m.id = r.message_id WHERE r.message_id = $1 ORDER BY r.position", message_id)
        return [row(r) for r in records]

    async def record_bounce(self, message_id: uuid.UUID, position: int | None, recipient: str | None,
                            event_type: str, data: dict[str, Any], suppress_reason: str | None) -> bool:
        """One bounce/complaint/auto-reply event, the recipient's status and maybe a suppression, in
        one transaction; never touches credits. False (nothing written) when the message is unknown
        or the recipient is not one of its recipients."""
        return bool(await self.pool.fetchval(
            "SELECT relay_bounce($1, $2, $3, $4, $5::jsonb, $6)", message_id, position, recipient, event_type,
            json.dumps(data), suppress_reason))

    # the suppression list -------------------------------------------------------------------

    async def suppressions(self, account_id: int, *, limit: int = 1000) -> list[dict[str, Any]]:
        """An account's suppressed addresses, newest first."""
        records = await self.pool.fetch(
            f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE account_id = $1 "
            "ORDER BY created_at DESC, address LIMIT $2", account_id, limit)
        return [row(r) for r in records]

    async def add_suppression(self, account_id: int, address: str, reason: str = "manual",
                              message_id: uuid.UUID | None = None) -> dict[str, Any]:
        """Put an address on the list (an existing entry keeps its reason and date)."""
        if reason not in REASONS:
            raise StoreError(f"reason must be one of {', '.join(REASONS)}, not {reason!r}")
        record = await self.pool.fetchrow(
            "WITH ins AS (INSERT INTO suppressions (account_id, address, reason, message_id) "
            "VALUES ($1, lower($2), $3, $4) ON CONFLICT (account_id, address) DO NOTHING "
            f"RETURNING {SUPPRESSION_COLUMNS}) "
            f"SELECT {SUPPRESSION_COLUMNS} FROM ins UNION ALL "
            f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE account_id = $1 AND address = lower($2) "
            "LIMIT 1", account_id, address, reason, message_id)
        assert record is not None
        return row(record)

    async def remove_suppression(self, account_id: int, address: str) -> bool:
        """Take an address off the list; False when it was not on it."""
        status = await self.pool.execute(
            "DELETE FROM suppressions WHERE account_id = $1 AND address = lower($2)", account_id, address)
        return status != "DELETE 0"
