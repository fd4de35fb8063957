"""Webhook endpoints, and the outbox: deliveries claimed under a lease with FOR UPDATE SKIP LOCKED,
each attempt recorded with its outcome in one transaction (only by the holder of the lease)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relay.errors import StoreError
from relay.store.base import StoreBase, row, translated

WEBHOOK_CHANNEL = "relay_webhooks"  # NOTIFY channel: relay_event queued deliveries
ENDPOINT_COLUMNS = "id, account_id, url, event_types, enabled, disabled_reason, failing_since, created_at"

_CLAIM_SQL = """
WITH due AS (
    SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
     WHERE d.status = 'pending' AND d.next_attempt_at <= clock_timestamp() AND e.enabled
       AND (d.lease_until IS NULL OR d.lease_until < clock_timestamp())
     ORDER BY d.next_attempt_at LIMIT $1
       FOR UPDATE OF d SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries d
       SET lease_until = clock_timestamp() + make_interval(secs => $2), lease_token = gen_random_uuid()
      FROM due WHERE d.id = due.id
    RETURNING d.id, d.lease_token, d.attempts, d.event_id, d.endpoint_id
)
SELECT c.id, c.lease_token, c.attempts, c.endpoint_id, ev.id AS event_id, ev.type, ev.created_at AS timestamp,
       ev.message_id, ev.recipient, ev.data::text AS data, ep.url, ep.secret,
       CASE WHEN ep.previous_until > clock_timestamp() THEN ep.previous_secret END AS previous_secret
  FROM claimed c JOIN events ev ON ev.id = c.event_id JOIN webhook_endpoints ep ON ep.id = c.endpoint_id
"""

# One attempt's record and its consequences, only while the lease is still ours:
# $3 'delivered' | 'retry' | 'failed'; $9 disable the endpoint with this reason (410, 5 days failing).
_RECORD_SQL = """
WITH mine AS (
    UPDATE webhook_deliveries
       SET attempts = attempts + 1, lease_until = NULL, lease_token = NULL,
           status = CASE $3::text WHEN 'retry' THEN 'pending' ELSE $3::text END,
           next_attempt_at = coalesce($4, next_attempt_at),
           finished_at = CASE WHEN $3::text = 'retry' THEN NULL ELSE clock_timestamp() END
     WHERE id = $1 AND lease_token = $2
    RETURNING id, attempts, endpoint_id
), attempt AS (
    INSERT INTO webhook_attempts (delivery_id, attempt, status_code, latency_ms, response, error)
    SELECT id, attempts, $5, $6, $7, $8 FROM mine
), endpoint AS (
    UPDATE webhook_endpoints e
       SET failing_since = CASE WHEN $3::text = 'delivered' THEN NULL
                                ELSE coalesce(e.failing_since, clock_timestamp()) END,
           enabled = CASE WHEN $9::text IS NOT NULL
                            OR ($3::text <> 'delivered'
                                AND e.failing_since < clock_timestamp() - make_interval(secs => $10))
                          THEN false ELSE e.enabled END,
           disabled_reason = CASE WHEN $9::text IS NOT NULL THEN $9::text
                                  WHEN $3::text <> 'delivered'
                                       AND e.failing_since < clock_timestamp() - make_interval(secs => $10)
                                  THEN 'nothing but failures for too long' ELSE e.disabled_reason END
      FROM mine WHERE e.id = mine.endpoint_id
       -- only when something changes: a success of a healthy endpoint writes nothing (no row lock
       -- shared by every delivery of a busy endpoint)
       AND (($3::text = 'delivered') = (e.failing_since IS NOT NULL) OR $9::text IS NOT NULL
            OR e.failing_since < clock_timestamp() - make_interval(secs => $10))
    RETURNING e.enabled
)
SELECT (SELECT count(*) FROM mine) AS recorded, (SELECT bool_and(enabled) FROM endpoint) AS enabled
"""


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery leased to this worker: what to POST where, and under which secrets."""

    id: int
    lease_token: uuid.UUID
    attempt: int  # the number of the attempt about to be made (1 for the first)
    endpoint_id: str
    url: str
    secrets: tuple[str, ...]  # the current one first; the previous one during a rotation
    event: dict[str, Any]


def _endpoint(record: Any) -> dict[str, Any]:
    return row(record)


@translated
class WebhookStore(StoreBase):
    """Endpoints per account and their deliveries."""

    async def create_endpoint(self, endpoint_id: str, account_id: int, url: str, event_types: list[str] | None,
                              secret: str) -> dict[str, Any]:
        """A new endpoint."""
        record = await self.pool.fetchrow(
            "INSERT INTO webhook_endpoints (id, account_id, url, event_types, secret) VALUES ($1, $2, $3, $4, $5) "
            f"RETURNING {ENDPOINT_COLUMNS}", endpoint_id, account_id, url, event_types, secret)
        assert record is not None
        return _endpoint(record)

    async def endpoints(self, account_id: int | None = None) -> list[dict[str, Any]]:
        """Endpoints (one account's, or every account's), oldest first; no secrets."""
        records = await self.pool.fetch(
            f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE ($1::bigint IS NULL OR account_id = $1) "
            "ORDER BY created_at, id", account_id)
        return [_endpoint(r) for r in records]

    async def remove_endpoint(self, endpoint_id: str, account_id: int | None = None) -> bool:
        """Delete an endpoint and its pending deliveries; False when there is none (in that account)."""
        status = await self.pool.execute(
            "DELETE FROM webhook_endpoints WHERE id = $1 AND ($2::bigint IS NULL OR account_id = $2)",
            endpoint_id, account_id)
        return status != "DELETE 0"

    async def rotate_endpoint_secret(self, endpoint_id: str, secret: str, overlap_seconds: float,
                                     account_id: int | None = None) -> dict[str, Any]:
        """A new secret; the current one keeps signing (beside it) for overlap_seconds."""
        record = await self.pool.fetchrow(
            "UPDATE webhook_endpoints SET previous_secret = secret, secret = $2, "
            "previous_until = clock_timestamp() + make_interval(secs => $3) "
            f"WHERE id = $1 AND ($4::bigint IS NULL OR account_id = $4) RETURNING {ENDPOINT_COLUMNS}",
            endpoint_id, secret, overlap_seconds, account_id)
        if record is None:
            raise StoreError(f"no such webhook endpoint: {endpoint_id}")
        return _endpoint(record)

    async def claim_deliveries(self, limit: int, lease_seconds: float) -> list[ClaimedDelivery]:
        """Lease up to limit due deliveries (SKIP LOCKED: instances never take the same one)."""
        async with self.pool.acquire() as conn, conn.transaction():
            records = await conn.fetch(_CLAIM_SQL, limit, lease_seconds)
        return [ClaimedDelivery(
            r["id"], r["lease_token"], r["attempts"] + 1, r["endpoint_id"], r["url"],
            tuple(s for s in (r["secret"], r["previous_secret"]) if s),
            {"id": r["event_id"], "type": r["type"], "timestamp": r["timestamp"], "message_id": r["message_id"],
             "recipient": r["recipient"], "data": json.loads(r["data"])},
        ) for r in records]

    async def record_attempt(self, claimed: ClaimedDelivery, outcome: str, next_attempt_at: datetime | None, *,
                             status_code: int, latency_ms: int, response: str | None, error: str | None,
                             disable_reason: str | None, disable_after_seconds: float) -> bool:
        """Record an attempt and its outcome ('delivered', 'retry', 'failed'); False when the lease
        was lost meanwhile (nothing recorded: the new holder's attempt counts)."""
        record = await self.pool.fetchrow(
            _RECORD_SQL, claimed.id, claimed.lease_token, outcome, next_attempt_at, status_code, latency_ms,
            response, error, disable_reason, disable_after_seconds)
        assert record is not None
        return bool(record["recorded"])

    async def deliveries(self, endpoint_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """An endpoint's recent deliveries with their attempts, newest first."""
        records = await self.pool.fetch(
            "SELECT d.id, d.event_id, ev.type, d.status, d.attempts, d.next_attempt_at, d.created_at, "
            " coalesce((SELECT json_agg(json_build_object('attempt', a.attempt, 'status_code', a.status_code, "
            "   'latency_ms', a.latency_ms, 'response', a.response, 'error', a.error, 'at', a.created_at) "
            "   ORDER BY a.attempt) FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]')::text AS attempts_json "
            "FROM webhook_deliveries d JOIN events ev ON ev.id = d.event_id WHERE d.endpoint_id = $1 "
            "ORDER BY d.created_at DESC, d.id DESC LIMIT $2", endpoint_id, limit)
        out = []
        for r in records:
            item = row(r)
            item["attempt_log"] = json.loads(item.pop("attempts_json"))
            out.append(item)
        return out
