"""The typed store: every query relay runs, behind methods that take and return plain values."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from relay.store.batch import Batcher


class StoreError(Exception):
    """A request the data does not allow (unknown account, duplicate name...), worded for the user."""


@dataclass(frozen=True, slots=True)
class Account:
    """An account and its balance."""

    id: int
    name: str
    credits: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SenderRule:
    """An authorized sender: an exact address or a whole domain, with its daily cap (None: default)."""

    pattern: str
    daily_cap: int | None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """An API key as the operator sees it (never the secret)."""

    id: str
    account_id: int
    name: str
    enabled: bool
    calls_per_minute: int | None
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class Principal:
    """What a presented key unlocks: the key, its account, and the account's senders."""

    key_id: str
    digest: bytes
    enabled: bool
    account_id: int
    senders: tuple[SenderRule, ...]


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer of relay_admit: a status, and for an idempotent replay the original message."""

    status: str  # 'sending', 'queued', INSUFFICIENT_*, IDEMPOTENCY_*, or 'REPLAY:<outcome>'
    original_id: uuid.UUID | None = None
    original_reply: str | None = None


@dataclass(frozen=True, slots=True)
class OpenResult:
    """The answer of relay_open: wait this long (0: go), key still enabled, balance."""

    retry_after: float
    enabled: bool
    credits: int


LOG_FIELDS = (
    "id", "channel", "status", "key_id", "account_id", "sender", "recipient_count", "size_bytes",
    "credits_charged", "credits_refunded", "upstream_reply", "failure_code", "deliver_after",
    "attempts", "created_at", "updated_at", "finished_at",
)
QUEUE_CHANNEL = "relay_queue"  # NOTIFY channel: queued messages became due
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class QueuedItem:
    """A claimed queued message: what delivery needs and what the retry rules look at."""

    message_id: uuid.UUID
    mail_from: str
    recipients: list[str]
    data: bytes
    credits_charged: int
    attempts: int
    deferrals: int
    created_at: datetime


class Claim:
    """A queued message locked (FOR UPDATE SKIP LOCKED) in an open transaction until it is settled."""

    def __init__(self, conn: asyncpg.Connection, item: QueuedItem) -> None:
        self.conn = conn
        self.item = item

    async def finalize(self, status: str, refund: int, reply: str | None, failure_code: int | None) -> bool:
        """Sent or failed for good (refund at most once), committed with the claim."""
        return bool(await self.conn.fetchval(FINALIZE_SQL, self.item.message_id, status, refund, reply,
                                             failure_code, False))

    async def retry_at(self, when: datetime, reply: str, failure_code: int | None, deferred: bool) -> None:
        """A transient failure: try again not before when."""
        await self.conn.execute(
            "UPDATE messages SET deliver_after = $2, attempts = attempts + 1, "
            "deferrals = deferrals + $3::int, upstream_reply = $4, failure_code = $5, "
            "updated_at = clock_timestamp() WHERE id = $1",
            self.item.message_id, when, int(deferred), reply, failure_code,
        )


# The rate-limit call commits asynchronously: its row lock is released at commit without waiting
# for the WAL flush, so concurrent calls of one key no longer queue behind each other's fsync
# (measured: +15-40% messages/s on the hot path). It only writes the key's rate window and
# last_used_at; a *database* crash may forget up to wal_writer_delay x 3 of those counts, which
# errs on the side of allowing calls. A relay crash loses nothing. Money, the message log and
# idempotency keys stay on synchronous commits (relay_admit, relay_finalize).
OPEN_CALL_SQL = (
    "SELECT o.* FROM set_config('synchronous_commit', 'off', true) AS s, relay_open($1, $2) AS o"
)


FINALIZE_SQL = "SELECT relay_finalize($1, $2, $3, $4, $5, $6)"

# Batches: the function once per array element, in the arrays' order, in one statement's
# transaction (each call sees the rows the calls before it wrote: the balance, the rate window).
OPEN_MANY_SQL = (
    "SELECT o.* FROM set_config('synchronous_commit', 'off', true) AS s, "
    "unnest($1::text[], $2::integer[]) WITH ORDINALITY AS u(key_id, lim, n) "
    "CROSS JOIN LATERAL relay_open(u.key_id, u.lim) AS o ORDER BY u.n"
)
ADMIT_MANY_SQL = (
    "SELECT a.status, a.original_id, a.original_reply "
    "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::integer[], "
    "            $7::integer[], $8::bigint[], $9::integer[], $10::text[], $11::bytea[]) "
    "     WITH ORDINALITY AS u(id, channel, key_id, account_id, sender, recipients, size, cost, cap, idem, fp, n) "
    "CROSS JOIN LATERAL relay_admit(u.id, u.channel, u.key_id, u.account_id, u.sender, u.recipients, u.size, "
    "                               u.cost, u.cap, u.idem, u.fp) AS a ORDER BY u.n"
)


def _item_error(exc: Exception) -> bool:
    """Could this error of a batched statement be one row's fault (a constraint, a deadlock)?
    A lost connection or a server shutting down is everybody's: no point retrying one by one."""
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(
        exc, (asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError))


@dataclass(frozen=True, slots=True)
class _Final:
    """The arguments of one relay_finalize call (account_id only orders a batch)."""

    message_id: uuid.UUID
    status: str
    refund: int
    reply: str | None
    failure_code: int | None
    retryable: bool
    account_id: int


@dataclass(frozen=True, slots=True)
class _Admit:
    """The arguments of one relay_admit call."""

    message_id: uuid.UUID
    channel: str
    key_id: str
    account_id: int
    sender: str
    recipients: int
    size: int
    cost: int
    cap: int
    idempotency_key: str | None
    fingerprint: bytes | None


@dataclass(frozen=True, slots=True)
class _Open:
    """The arguments of one relay_open call."""

    key_id: str
    default_limit: int


def _in_lock_order(batch: Sequence[T], key: Callable[[T], Any]) -> tuple[list[T], list[int]]:
    """The batch sorted by the rows its items lock (accounts first) and where each item went.

    Two batches that take account rows in the same order cannot deadlock over them, whether they
    run in this process (an admit batch beside a finalize batch) or in another instance; any other
    deadlock PostgreSQL breaks, and the Batcher reruns the items one by one.
    """
    order = sorted(range(len(batch)), key=lambda i: key(batch[i]))
    return [batch[i] for i in order], order


def _unsorted(results: Sequence[R], order: list[int]) -> list[R]:
    """Results of a batch run in lock order, put back in the order the items came."""
    out: list[R] = [None] * len(order)  # type: ignore[list-item]
    for result, i in zip(results, order, strict=True):
        out[i] = result
    return out


async def _keep(conn: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to reset (see Store.connect)."""


def _row(record: asyncpg.Record) -> dict[str, Any]:
    return dict(record.items())


class Store:
    """A connection pool plus the queries; one instance per process."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        # concurrent sends share statements and commits: one round trip for each step's lot
        self.opener: Batcher[_Open, OpenResult] = Batcher(self._open_one, self._open_many,
                                                          item_error=_item_error)
        self.admitter: Batcher[_Admit, Admission] = Batcher(self._admit_one, self._admit_many,
                                                            item_error=_item_error)
        self.finalizer: Batcher[_Final, bool] = Batcher(self._finalize_one, self._finalize_many,
                                                        item_error=_item_error)

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> Store:
        """Open a pool to the database at dsn."""
        # reset=_keep: the queries of relay change no session state (no LISTEN, SET, cursors or
        # advisory locks on pool connections), so the default reset query, a round trip on every
        # release, is skipped; asyncpg still rolls back an open transaction on release.
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, reset=_keep)
        assert pool is not None
        return cls(pool)

    async def close(self) -> None:
        """Close the pool, waiting for queries in flight."""
        await self.pool.close()

    # -- accounts ------------------------------------------------------------------------

    async def create_account(self, name: str, credits: int = 0) -> Account:
        """A new account, with an opening top-up in the ledger when credits > 0."""
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    "INSERT INTO accounts (name, credits) VALUES ($1, $2) "
                    "RETURNING id, name, credits, created_at", name, credits,
                )
            except asyncpg.UniqueViolationError:
                raise StoreError(f"an account named {name!r} already exists") from None
            assert row is not None
            if credits:
                await conn.execute(
                    "INSERT INTO credit_ledger (account_id, delta, kind) VALUES ($1, $2, 'topup')",
                    row["id"], credits,
                )
        return Account(**_row(row))

    async def find_account(self, ref: str) -> Account:
        """The account named ref, or with id ref; StoreError when there is none."""
        row = await self.pool.fetchrow(
            "SELECT id, name, credits, created_at FROM accounts WHERE name = $1 "
            "OR ($1 ~ '^[0-9]{1,18}$' AND id = $1::bigint) ORDER BY (name = $1) DESC LIMIT 1", ref,
        )
        if row is None:
            raise StoreError(f"no account {ref!r}")
        return Account(**_row(row))

    async def list_accounts(self) -> list[Account]:
        """All accounts, by id."""
        rows = await self.pool.fetch("SELECT id, name, credits, created_at FROM accounts ORDER BY id")
        return [Account(**_row(r)) for r in rows]

    async def add_credits(self, account_id: int, amount: int) -> int:
        """Top up a balance (recorded in the ledger); the new balance."""
        async with self.pool.acquire() as conn, conn.transaction():
            balance = await conn.fetchval(
                "UPDATE accounts SET credits = credits + $2 WHERE id = $1 RETURNING credits",
                account_id, amount,
            )
            await conn.execute(
                "INSERT INTO credit_ledger (account_id, delta, kind) VALUES ($1, $2, 'topup')",
                account_id, amount,
            )
        return int(balance)

    async def ledger_balance(self, account_id: int) -> int:
        """The balance recomputed from the ledger alone (it must equal accounts.credits)."""
        return int(await self.pool.fetchval(
            "SELECT coalesce(sum(delta), 0) FROM credit_ledger WHERE account_id = $1", account_id,
        ))

    async def balance(self, account_id: int) -> int:
        """The current balance."""
        return int(await self.pool.fetchval("SELECT credits FROM accounts WHERE id = $1", account_id))

    # -- senders -------------------------------------------------------------------------

    async def add_sender(self, account_id: int, pattern: str, daily_cap: int | None) -> SenderRule:
        """Authorize an address or domain (again: update its cap)."""
        row = await self.pool.fetchrow(
            "INSERT INTO senders (account_id, pattern, daily_cap) VALUES ($1, $2, $3) "
            "ON CONFLICT (account_id, pattern) DO UPDATE SET daily_cap = EXCLUDED.daily_cap "
            "RETURNING pattern, daily_cap", account_id, pattern.lower(), daily_cap,
        )
        assert row is not None
        return SenderRule(**_row(row))

    async def list_senders(self, account_id: int) -> list[SenderRule]:
        """An account's authorized senders."""
        rows = await self.pool.fetch(
            "SELECT pattern, daily_cap FROM senders WHERE account_id = $1 ORDER BY pattern", account_id,
        )
        return [SenderRule(**_row(r)) for r in rows]

    # -- keys ----------------------------------------------------------------------------

    async def create_key(self, key_id: str, account_id: int, digest: bytes, name: str,
                         calls_per_minute: int | None) -> KeyInfo:
        """Store a new key's digest."""
        row = await self.pool.fetchrow(
            "INSERT INTO api_keys (id, account_id, digest, name, calls_per_minute) "
            "VALUES ($1, $2, $3, $4, $5) RETURNING id, account_id, name, enabled, "
            "calls_per_minute, created_at, last_used_at",
            key_id, account_id, digest, name, calls_per_minute,
        )
        assert row is not None
        return KeyInfo(**_row(row))

    async def get_key(self, key_id: str) -> KeyInfo:
        """A key's public data; StoreError when unknown."""
        row = await self.pool.fetchrow(
            "SELECT id, account_id, name, enabled, calls_per_minute, created_at, last_used_at "
            "FROM api_keys WHERE id = $1", key_id,
        )
        if row is None:
            raise StoreError(f"no key {key_id!r}")
        return KeyInfo(**_row(row))

    async def list_keys(self, account_id: int) -> list[KeyInfo]:
        """An account's keys."""
        rows = await self.pool.fetch(
            "SELECT id, account_id, name, enabled, calls_per_minute, created_at, last_used_at "
            "FROM api_keys WHERE account_id = $1 ORDER BY created_at", account_id,
        )
        return [KeyInfo(**_row(r)) for r in rows]

    async def set_key_enabled(self, key_id: str, enabled: bool) -> KeyInfo:
        """Enable or disable a key."""
        status = await self.pool.execute(
            "UPDATE api_keys SET enabled = $2 WHERE id = $1", key_id, enabled,
        )
        if status.endswith(" 0"):
            raise StoreError(f"no key {key_id!r}")
        return await self.get_key(key_id)

    async def rotate_key(self, key_id: str, digest: bytes) -> KeyInfo:
        """Replace a key's secret (the old one stops working at once); the key is enabled."""
        status = await self.pool.execute(
            "UPDATE api_keys SET digest = $2, enabled = true, rotated_at = now() WHERE id = $1",
            key_id, digest,
        )
        if status.endswith(" 0"):
            raise StoreError(f"no key {key_id!r}")
        return await self.get_key(key_id)

    # -- the send path -------------------------------------------------------------------

    async def load_principal(self, key_id: str) -> Principal | None:
        """A key with its account's senders, in one round trip; None when unknown."""
        row = await self.pool.fetchrow(
            "SELECT k.id, k.digest, k.enabled, k.account_id, "
            " coalesce((SELECT json_agg(json_build_array(s.pattern, s.daily_cap))::text "
            "           FROM senders s WHERE s.account_id = k.account_id), '[]') AS senders "
            "FROM api_keys k WHERE k.id = $1", key_id,
        )
        if row is None:
            return None
        senders = tuple(SenderRule(p, c) for p, c in json.loads(row["senders"]))
        return Principal(row["id"], bytes(row["digest"]), row["enabled"], row["account_id"], senders)

    async def open_call(self, key_id: str, default_limit: int) -> OpenResult:
        """Count a call against the key's rolling minute and read the balance (one round trip;
        calls made while another is in flight share the next one, store/batch.py)."""
        return await self.opener(_Open(key_id, default_limit))

    async def _open_one(self, o: _Open) -> OpenResult:
        row = await self.pool.fetchrow(OPEN_CALL_SQL, o.key_id, o.default_limit)
        assert row is not None
        return OpenResult(float(row["retry_after"]), bool(row["enabled"]), int(row["credits"]))

    async def _open_many(self, batch: Sequence[_Open]) -> list[OpenResult]:
        ordered, order = _in_lock_order(batch, lambda o: o.key_id)
        rows = await self.pool.fetch(OPEN_MANY_SQL, [o.key_id for o in ordered],
                                     [o.default_limit for o in ordered])
        return _unsorted([OpenResult(float(r["retry_after"]), bool(r["enabled"]), int(r["credits"]))
                          for r in rows], order)

    async def admit(self, message_id: uuid.UUID, channel: str, key_id: str, account_id: int,
                    sender: str, recipients: int, size: int, cost: int, cap: int,
                    idempotency_key: str | None = None, fingerprint: bytes | None = None) -> Admission:
        """Idempotency, pre-flight, debit, cap and the write-ahead row in one round trip (batched
        with concurrent admits into one statement and one commit, store/batch.py)."""
        return await self.admitter(_Admit(message_id, channel, key_id, account_id, sender, recipients,
                                          size, cost, cap, idempotency_key, fingerprint))

    async def _admit_one(self, a: _Admit) -> Admission:
        row = await self.pool.fetchrow(
            "SELECT * FROM relay_admit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            a.message_id, a.channel, a.key_id, a.account_id, a.sender, a.recipients, a.size, a.cost,
            a.cap, a.idempotency_key, a.fingerprint,
        )
        assert row is not None
        return Admission(row["status"], row["original_id"], row["original_reply"])

    async def _admit_many(self, batch: Sequence[_Admit]) -> list[Admission]:
        # relay_admit locks the idempotency key's row, then the account, then the sender's count
        ordered, order = _in_lock_order(batch, lambda a: (a.account_id, a.idempotency_key or "", a.sender))
        rows = await self.pool.fetch(
            ADMIT_MANY_SQL, [a.message_id for a in ordered], [a.channel for a in ordered],
            [a.key_id for a in ordered], [a.account_id for a in ordered], [a.sender for a in ordered],
            [a.recipients for a in ordered], [a.size for a in ordered], [a.cost for a in ordered],
            [a.cap for a in ordered], [a.idempotency_key for a in ordered], [a.fingerprint for a in ordered],
        )
        return _unsorted([Admission(r["status"], r["original_id"], r["original_reply"]) for r in rows], order)

    async def store_queued_body(self, message_id: uuid.UUID, mail_from: str,
                                recipients: Sequence[str], data: bytes) -> None:
        """Keep a queued message's envelope and data until it is delivered."""
        await self.pool.execute(
            "INSERT INTO queued_bodies (message_id, mail_from, recipients, data) "
            "VALUES ($1, $2, $3, $4)", message_id, mail_from, list(recipients), data,
        )

    async def finalize(self, message_id: uuid.UUID, status: str, refund: int,
                       upstream_reply: str | None, failure_code: int | None, *, retryable: bool = False,
                       account_id: int = 0) -> bool:
        """Record the fate of a message and refund (at most once); False if it was already final.

        retryable: the failure was transient, so the message's idempotency key is released.
        Calls made while another is in flight are batched into one transaction (store/batch.py);
        account_id, the message's account, orders a batch as the admits are ordered.
        """
        return await self.finalizer(_Final(message_id, status, refund, upstream_reply, failure_code, retryable,
                                           account_id))

    async def _finalize_one(self, f: _Final) -> bool:
        return bool(await self.pool.fetchval(FINALIZE_SQL, f.message_id, f.status, f.refund, f.reply,
                                             f.failure_code, f.retryable))

    async def _finalize_many(self, batch: Sequence[_Final]) -> list[bool]:
        # relay_finalize once per row, in lock order, in one statement's transaction
        batch, order = _in_lock_order(batch, lambda f: f.account_id)
        results = await self.pool.fetchval(
            "SELECT array_agg(relay_finalize(u.id, u.status, u.refund, u.reply, u.code, u.retryable)"
            "                 ORDER BY u.n) "
            "FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::integer[], $6::boolean[])"
            "     WITH ORDINALITY AS u(id, status, refund, reply, code, retryable, n)",
            [f.message_id for f in batch], [f.status for f in batch], [f.refund for f in batch],
            [f.reply for f in batch], [f.failure_code for f in batch], [f.retryable for f in batch],
        )
        return _unsorted([bool(r) for r in results], order)

    async def stranded(self, older_than_seconds: float) -> list[asyncpg.Record]:
        """Rows a crash left between admit and finalize: 'sending' too long, or queued without a body."""
        return await self.pool.fetch(
            "SELECT m.id, m.status, m.credits_charged, m.account_id FROM messages m "
            "WHERE m.updated_at < clock_timestamp() - make_interval(secs => $1) AND ("
            " m.status = 'sending' OR (m.status = 'queued' AND NOT EXISTS "
            "  (SELECT 1 FROM queued_bodies b WHERE b.message_id = m.id)))",
            older_than_seconds,
        )

    # -- reading the log -----------------------------------------------------------------

    async def message(self, message_id: uuid.UUID) -> dict[str, Any] | None:
        """One log row."""
        row = await self.pool.fetchrow(
            f"SELECT {', '.join(LOG_FIELDS)} FROM messages WHERE id = $1", message_id,
        )
        return None if row is None else _row(row)

    async def logs(self, *, account_id: int | None = None, status: str | None = None,
                   channel: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Log rows, newest first, filtered."""
        rows = await self.pool.fetch(
            f"SELECT {', '.join(LOG_FIELDS)} FROM messages "
            "WHERE ($1::bigint IS NULL OR account_id = $1) AND ($2::text IS NULL OR status = $2) "
            "AND ($3::text IS NULL OR channel = $3) ORDER BY created_at DESC LIMIT $4",
            account_id, status, channel, limit,
        )
        return [_row(r) for r in rows]

    @contextlib.asynccontextmanager
    async def claim_queued(self, now: datetime, sender: str | None = None) -> AsyncIterator[Claim | None]:
        """Lock the next due queued message for the length of the block (None: nothing due).

        The lock is a row lock in an open transaction: another instance skips the row, and if this
        process dies the transaction rolls back and the message is simply queued again.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            item = await _claim_one(conn, now, sender)
            yield None if item is None else Claim(conn, item)

    async def release(self, now: datetime, sender: str | None = None) -> int:
        """Make queued messages due now (operator override of the cap) and wake the workers."""
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE messages SET deliver_after = $1 WHERE status = 'queued' AND deliver_after > $1 "
                "AND ($2::text IS NULL OR sender = $2)", now, sender,
            )
            await conn.execute(f"NOTIFY {QUEUE_CHANNEL}")
        return int(status.split()[-1])

    async def cleanup(self, *, keep_bodies_hours: float, log_days: float, batch: int) -> dict[str, int]:
        """Retention in batches: bodies of finished messages, old log rows, old counters."""
        removed = {"bodies": 0, "messages": 0, "counters": 0, "idempotency_keys": 0}
        statements = {
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
        }
        ages = {"bodies": keep_bodies_hours * 3600, "messages": log_days * 86400, "counters": 0.0,
                "idempotency_keys": 86400.0}
        for name, sql in statements.items():
            while True:
                status = await self.pool.execute(sql, ages[name], batch)
                count = int(status.split()[-1])
                removed[name] += count
                if count < batch:
                    break
        return removed

    async def queue_depth(self) -> int:
        """How many messages are queued."""
        return int(await self.pool.fetchval("SELECT count(*) FROM messages WHERE status = 'queued'"))

    async def queued(self, sender: str | None = None) -> list[dict[str, Any]]:
        """Queued messages, oldest first."""
        rows = await self.pool.fetch(
            f"SELECT {', '.join(LOG_FIELDS)} FROM messages WHERE status = 'queued' "
            "AND ($1::text IS NULL OR sender = $1) ORDER BY created_at", sender,
        )
        return [_row(r) for r in rows]


async def _claim_one(conn: asyncpg.Connection, now: datetime, sender: str | None) -> QueuedItem | None:
    row = await conn.fetchrow(
        "SELECT m.id, b.mail_from, b.recipients, b.data, m.credits_charged, m.attempts, m.deferrals, "
        "m.created_at FROM messages m JOIN queued_bodies b ON b.message_id = m.id "
        "WHERE m.status = 'queued' AND m.deliver_after <= $1 AND ($2::text IS NULL OR m.sender = $2) "
        "ORDER BY m.deliver_after LIMIT 1 FOR UPDATE OF m SKIP LOCKED",
        now, sender,
    )
    if row is None:
        return None
    return QueuedItem(row["id"], row["mail_from"], list(row["recipients"]), bytes(row["data"]),
                      row["credits_charged"], row["attempts"], row["deferrals"], row["created_at"])


def as_dict(value: Any) -> dict[str, Any]:
    """A store record as a plain dict (for --json)."""
    return asdict(value)
