"""Reading the message log."""

from __future__ import annotations

import json
import uuid
from typing import Any

from relay.store.base import StoreBase, row, translated

LOG_FIELDS = (
    "id", "channel", "status", "key_id", "account_id", "sender", "recipient_count", "size_bytes",
    "credits_charged", "credits_refunded", "upstream_reply", "failure_code", "deliver_after",
    "attempts", "created_at", "updated_at", "finished_at", "subject",
)
LOG_COLUMNS = ", ".join(LOG_FIELDS)


@translated
class LogStore(StoreBase):
    """Log rows, one or many."""

    async def message(self, message_id: uuid.UUID) -> dict[str, Any] | None:
        """One log row."""
        record = await self.pool.fetchrow(f"SELECT {LOG_COLUMNS} FROM messages WHERE id = $1", message_id)
        return None if record is None else row(record)

    async def message_with_details(self, message_id: uuid.UUID) -> dict[str, Any] | None:
        """One log row with its recipients (address, status) and events, in one round trip."""
        record = await self.pool.fetchrow(
            f"SELECT {LOG_COLUMNS}, {_DETAILS} FROM messages m WHERE id = $1", message_id)
        return None if record is None else _detailed(record)

    async def logs(self, *, account_id: int | None = None, status: str | None = None,
                   channel: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Log rows, newest first, filtered."""
        records = await self.pool.fetch(
            f"SELECT {LOG_COLUMNS}, {_DETAILS} FROM messages m "
            "WHERE ($1::bigint IS NULL OR account_id = $1) AND ($2::text IS NULL OR status = $2) "
            "AND ($3::text IS NULL OR channel = $3) ORDER BY created_at DESC LIMIT $4",
            account_id, status, channel, limit,
        )
        return [_detailed(r) for r in records]


# A log row's recipients and events, as JSON beside its columns (one round trip for any number of rows)
_DETAILS = (
    "coalesce((SELECT json_agg(json_build_object('address', r.address, 'status', coalesce(r.status, m.status)) "
    "                 ORDER BY r.position) "
    "          FROM message_recipients r WHERE r.message_id = m.id), '[]')::text AS recipients_json, "
    "coalesce((SELECT json_agg(json_build_object('id', e.id, 'type', e.type, 'timestamp', e.created_at, "
    "                                             'message_id', e.message_id, 'recipient', e.recipient, "
    "                                             'data', e.data) ORDER BY e.created_at, e.id) "
    "          FROM events e WHERE e.message_id = m.id), '[]')::text AS events_json"
)


def _detailed(record: Any) -> dict[str, Any]:
    out = row(record)
    out["recipients"] = json.loads(out.pop("recipients_json"))
    out["events"] = json.loads(out.pop("events_json"))
    return out
