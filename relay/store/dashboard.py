"""The dashboard's read queries: one account's log page, a message, daily counts, the ledger, its keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from relay.addresses import normalize
from relay.domain import KeyInfo
from relay.store.base import StoreBase, row, translated
from relay.store.log import LOG_COLUMNS

_KEY_FIELDS = "id, account_id, name, enabled, calls_per_minute, created_at, last_used_at"


# The Overview's chart: one account's messages per UTC day and status since a day ($2). No ORDER BY:
# the caller files the rows by day, and without it a hash of the ~120 groups replaces a sort of
# every row (which spills to disk past work_mem on a busy account).
DAILY_COUNTS = ("SELECT (created_at AT TIME ZONE 'UTC')::date AS day, status, count(*) AS n FROM messages "
                "WHERE account_id = $1 AND created_at >= $2::date::timestamp AT TIME ZONE 'UTC' "
                "GROUP BY 1, 2")


@dataclass(frozen=True, slots=True)
class LogFilter:
    """What the Logs tab narrows by (None: any). Dates are UTC days, both ends included."""

    channel: str | None = None
    status: str | None = None
    sender: str | None = None
    since: date | None = None
    until: date | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a log page ends: the (created_at, id) of its last row; the next page starts after it."""

    created_at: datetime
    id: uuid.UUID


def log_query(account_id: int, where: LogFilter, after: Cursor | None, limit: int) -> tuple[str, list[Any]]:
    """The SQL and arguments of one log page. Only the filters in use are in the WHERE clause, so
    each shape of query is planned on the index that matches it (see migration 'dashboard')."""
    args: list[Any] = [account_id]
    conds = ["account_id = $1"]

    def add(sql: str, value: Any) -> None:
        args.append(value)
        conds.append(sql.format(f"${len(args)}"))

    if where.channel:
        add("channel = {}", where.channel)
    if where.status:
        add("status = {}", where.status)
    if where.sender:  # stored as the pipeline normalized it: the local part as given, the domain lower-cased
        add("sender = {}", normalize(where.sender) if "@" in where.sender else where.sender)
    if where.since:
        add("created_at >= {}", datetime(where.since.year, where.since.month, where.since.day, tzinfo=UTC))
    if where.until:
        end = where.until + timedelta(days=1)
        add("created_at < {}", datetime(end.year, end.month, end.day, tzinfo=UTC))
    if after is not None:
        args += [after.created_at, after.id]
        conds.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    sql = (f"SELECT {LOG_COLUMNS} FROM messages WHERE {' AND '.join(conds)} "
           f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}")
    return sql, args


@translated
class DashboardStore(StoreBase):
    """Read queries scoped to one account, for the dashboard's tabs."""

    async def log_page(self, account_id: int, where: LogFilter, after: Cursor | None,
                       limit: int = 50) -> list[dict[str, Any]]:
        """One page of an account's log, newest first, after the cursor."""
        sql, args = log_query(account_id, where, after, limit)
        return [row(r) for r in await self.pool.fetch(sql, *args)]

    async def account_message(self, account_id: int, message_id: uuid.UUID) -> dict[str, Any] | None:
        """One message of this account (another account's message is None, as if it did not exist)."""
        record = await self.pool.fetchrow(
            f"SELECT {LOG_COLUMNS} FROM messages WHERE id = $1 AND account_id = $2", message_id, account_id)
        return None if record is None else row(record)

    async def message_ledger(self, message_id: uuid.UUID) -> list[dict[str, Any]]:
        """The ledger entries of one message (its debit and any refund), oldest first."""
        records = await self.pool.fetch(
            "SELECT kind, delta, created_at FROM credit_ledger WHERE message_id = $1 ORDER BY id", message_id)
        return [row(r) for r in records]

    async def daily_counts(self, account_id: int, days: int, today: date) -> list[tuple[date, str, int]]:
        """Messages per UTC day and status for the last days, today included (in no particular order)."""
        first = today - timedelta(days=days - 1)
        records = await self.pool.fetch(DAILY_COUNTS, account_id, first)
        return [(r["day"], r["status"], int(r["n"])) for r in records]

    async def ledger(self, account_id: int, limit: int = 20) -> list[dict[str, Any]]:
        """The newest entries of an account's credit ledger."""
        records = await self.pool.fetch(
            "SELECT id, delta, kind, message_id, created_at FROM credit_ledger WHERE account_id = $1 "
            "ORDER BY id DESC LIMIT $2", account_id, limit)
        return [row(r) for r in records]

    async def account_key(self, account_id: int, key_id: str) -> KeyInfo | None:
        """A key of this account, or None (another account's key looks like no key)."""
        record = await self.pool.fetchrow(
            f"SELECT {_KEY_FIELDS} FROM api_keys WHERE id = $1 AND account_id = $2", key_id, account_id)
        return None if record is None else KeyInfo(**row(record))

    async def set_key_rate(self, account_id: int, key_id: str, calls_per_minute: int | None) -> bool:
        """Change a key's own rate limit (None: the default); False when it is not this account's."""
        status = await self.pool.execute(
            "UPDATE api_keys SET calls_per_minute = $3 WHERE id = $1 AND account_id = $2",
            key_id, account_id, calls_per_minute)
        return not status.endswith(" 0")
