"""Retention: old bodies, log rows, counters and idempotency keys deleted in batches."""

from __future__ import annotations

from relay.store.base import StoreBase, translated

_STATEMENTS = {
    "bodies": "DELETE FROM queued_bodies WHERE message_id IN (SELECT b.message_id FROM queued_bodies b "
              "JOIN messages m ON m.id = b.message_id WHERE m.finished_at < clock_timestamp() "
              "- make_interval(secs => $1) LIMIT $2)",
    "messages": "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE finished_at < "
                "clock_timestamp() - make_interval(secs => $1) LIMIT $2)",
    "counters": "DELETE FROM sender_day_counts WHERE ctid IN (SELECT ctid FROM sender_day_counts "
                "WHERE day < (clock_timestamp() AT TIME ZONE 'UTC')::date - 2 "
                "AND $1::float8 IS NOT NULL LIMIT $2)",
    "idempotency_keys": "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys "
                        "WHERE created_at < clock_timestamp() - make_interval(secs => $1) LIMIT $2)",
    "inbound_log": "DELETE FROM inbound_log WHERE id IN (SELECT id FROM inbound_log "
                   "WHERE created_at < clock_timestamp() - make_interval(secs => $1) LIMIT $2)",
}


@translated
class RetentionStore(StoreBase):
    """The cleanup pass."""

    async def cleanup(self, *, keep_bodies_hours: float, log_days: float, batch: int) -> dict[str, int]:
        """Retention in batches: bodies of finished messages, old log rows, old counters."""
        removed = dict.fromkeys(_STATEMENTS, 0)
        ages = {"bodies": keep_bodies_hours * 3600, "messages": log_days * 86400, "counters": 0.0,
                "idempotency_keys": 86400.0, "inbound_log": log_days * 86400}
        for name, sql in _STATEMENTS.items():
            while True:
                status = await self.pool.execute(sql, ages[name], batch)
                count = int(status.split()[-1])
                removed[name] += count
                if count < batch:
                    break
        return removed
