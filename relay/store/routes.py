"""Inbound routes, the account's signing secret, and the inbound log."""

from __future__ import annotations

import secrets as random
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from relay.errors import StoreError
from relay.inbound.log import InboundRecord
from relay.inbound.routes import Format, Route
from relay.outbound import signing
from relay.store.base import StoreBase, row, translated

_ROUTE = ("r.id, r.account_id, r.match, r.url, r.format, r.priority, r.oversize_text, r.created_at, "
          "a.name AS account_name")
_LOG = ("id, account_id, route_id, url, recipients, sender, remote_ip, size_bytes, http_status, response_text, "
        "smtp_reply, outcome, duration_ms, webhook_id, created_at")


def _route(record: asyncpg.Record) -> Route:
    fields = row(record)
    fields["format"] = Format(fields["format"])
    fields["created"] = fields.pop("created_at")
    return Route(**fields)


def _record(record: asyncpg.Record) -> InboundRecord:
    fields: dict[str, Any] = row(record)
    fields["recipients"] = tuple(fields["recipients"])
    return InboundRecord(**fields)


async def _ensure_secret(conn: asyncpg.Connection | Any, account_id: int) -> tuple[str, bool]:
    """The account's signing secret, made now if it has none; (secret, made now)."""
    made = await conn.fetchval(
        "INSERT INTO account_signing_secrets (account_id, secret) VALUES ($1, $2) "
        "ON CONFLICT (account_id) DO NOTHING RETURNING secret", account_id, signing.generate_secret())
    if made is not None:
        return str(made), True
    return str(await conn.fetchval("SELECT secret FROM account_signing_secrets WHERE account_id = $1",
                                   account_id)), False


@translated
class RouteStore(StoreBase):
    """Routes per account, signing secrets, and the inbound log."""

    # -- routes ----------------------------------------------------------------------------

    async def create_route(self, account_id: int, match: str, url: str, *, format: Format = Format.JSON,
                           priority: int = 0, oversize_text: str | None = None) -> tuple[Route, str, bool]:
        """A new route (checked by the caller), and the account's signing secret (made with its first
        route: then the third value is True)."""
        route_id = "rt_" + random.token_hex(8)
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                await conn.execute(
                    "INSERT INTO inbound_routes (id, account_id, match, url, format, priority, oversize_text) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    route_id, account_id, match, url, format.value, priority, oversize_text)
            except asyncpg.ForeignKeyViolationError:
                raise StoreError(f"no account with id {account_id}") from None
            except asyncpg.CheckViolationError as exc:
                raise StoreError(f"route refused: {exc.constraint_name}") from None
            secret, made = await _ensure_secret(conn, account_id)
            record = await conn.fetchrow(
                f"SELECT {_ROUTE} FROM inbound_routes r JOIN accounts a ON a.id = r.account_id WHERE r.id = $1",
                route_id)
        assert record is not None
        return _route(record), secret, made

    async def list_routes(self, account_id: int | None = None) -> list[Route]:
        """One account's routes (every route when None), in the order they are tried."""
        records = await self.pool.fetch(
            f"SELECT {_ROUTE} FROM inbound_routes r JOIN accounts a ON a.id = r.account_id "
            "WHERE $1::bigint IS NULL OR r.account_id = $1 ORDER BY r.priority, r.created_at, r.id", account_id)
        return [_route(r) for r in records]

    async def remove_route(self, route_id: str, account_id: int | None = None) -> bool:
        """Delete a route (only the account's own when account_id is given); False when none was found."""
        deleted = await self.pool.fetchval(
            "DELETE FROM inbound_routes WHERE id = $1 AND ($2::bigint IS NULL OR account_id = $2) RETURNING id",
            route_id, account_id)
        return deleted is not None

    # -- signing secrets ---------------------------------------------------------------------

    async def ensure_signing_secret(self, account_id: int) -> tuple[str, bool]:
        """The account's signing secret, made now when it has none (the first route or webhook)."""
        async with self.pool.acquire() as conn:
            try:
                return await _ensure_secret(conn, account_id)
            except asyncpg.ForeignKeyViolationError:
                raise StoreError(f"no account with id {account_id}") from None

    async def signing_secret(self, account_id: int) -> str | None:
        """The account's current signing secret (None before its first route or webhook)."""
        found = await self.pool.fetchval(
            "SELECT secret FROM account_signing_secrets WHERE account_id = $1", account_id)
        return None if found is None else str(found)

    async def active_signing_secrets(self, account_ids: Iterable[int]) -> dict[int, list[str]]:
        """Per account, every secret a request is signed with now: the current one, and the previous
        one while a rotation's overlap lasts."""
        records = await self.pool.fetch(
            "SELECT account_id, secret, CASE WHEN previous_until > now() THEN previous END AS previous "
            "FROM account_signing_secrets WHERE account_id = ANY($1::bigint[])", sorted(set(account_ids)))
        return {r["account_id"]: [r["secret"]] + ([r["previous"]] if r["previous"] else []) for r in records}

    # -- the inbound log ------------------------------------------------------------------------

    async def record_inbound(self, records: Sequence[InboundRecord]) -> None:
        """Write log rows (one statement for all the routes of one message)."""
        if not records:
            return
        await self.pool.executemany(
            "INSERT INTO inbound_log (id, account_id, route_id, url, recipients, sender, remote_ip, size_bytes, "
            "http_status, response_text, smtp_reply, outcome, duration_ms, webhook_id) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            [(r.id, r.account_id, r.route_id, r.url, list(r.recipients), r.sender, r.remote_ip, r.size_bytes,
              r.http_status, r.response_text, r.smtp_reply, r.outcome, r.duration_ms, r.webhook_id)
             for r in records])

    async def inbound_logs(self, account_id: int | None = None, limit: int = 100) -> list[InboundRecord]:
        """The newest inbound log rows (of one account when given)."""
        records = await self.pool.fetch(
            f"SELECT {_LOG} FROM inbound_log WHERE $1::bigint IS NULL OR account_id = $1 "
            "ORDER BY created_at DESC LIMIT $2", account_id, limit)
        return [_record(r) for r in records]

    async def inbound_record(self, record_id: uuid.UUID, account_id: int | None = None) -> InboundRecord | None:
        """One inbound log row (only the account's own when account_id is given)."""
        record = await self.pool.fetchrow(
            f"SELECT {_LOG} FROM inbound_log WHERE id = $1 AND ($2::bigint IS NULL OR account_id = $2)",
            record_id, account_id)
        return None if record is None else _record(record)
