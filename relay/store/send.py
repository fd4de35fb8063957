"""The send path's queries: the key's principal, the rate-limit call, admit, and finalize, batched."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from relay.domain import NO_EXTRAS, Admission, Extras, OpenResult, Principal, SenderRule
from relay.store.base import StoreBase, in_lock_order, item_error, translated, unsorted
from relay.store.batch import Batcher
from relay.store.instance import LOCK_CLASS

# The rate-limit call commits asynchronously: its row lock is released at commit without waiting
# for the WAL flush, so concurrent calls of one key no longer queue behind each other's fsync
# (measured: +15-40% messages/s on the hot path). It only writes the key's rate window and
# last_used_at; a *database* crash may forget up to wal_writer_delay x 3 of those counts, which
# errs on the side of allowing calls. A relay crash loses nothing. Money, the message log and
# idempotency keys stay on synchronous commits (relay_admit, relay_finalize).
OPEN_CALL_SQL = (
    "SELECT o.* FROM set_config('synchronous_commit', 'off', true) AS s, relay_lease($1, $2, $3, $4, $5) AS o"
)

# the bucket of second $2 is at 61 - (second - $2) once the window was moved to `second`
GIVE_BACK_SQL = (
    "UPDATE rate_windows SET counts[61 - (second - $2)::integer] = "
    "greatest(counts[61 - (second - $2)::integer] - $3, 0) "
    "WHERE key_id = $1 AND second - $2 BETWEEN 0 AND 60"
)
FINALIZE_SQL = "SELECT relay_finalize($1, $2, $3, $4, $5, $6, $7)"
# Lists inside a batch's arrays travel newline-joined (PostgreSQL arrays cannot be ragged); an
# address never holds a line break (addresses.is_valid_address).
_SEP = "\n"

# Batches: the function once per array element, in the arrays' order, in one statement's
# transaction (each call sees the rows the calls before it wrote: the balance, the rate window).
OPEN_MANY_SQL = (
    "SELECT o.* FROM set_config('synchronous_commit', 'off', true) AS s, "
    "unnest($1::text[], $2::integer[], $3::integer[], $4::bigint[], $5::integer[]) "
    "WITH ORDINALITY AS u(key_id, lim, want, back_second, back, n) "
    "CROSS JOIN LATERAL relay_lease(u.key_id, u.lim, u.want, u.back_second, u.back) AS o ORDER BY u.n"
)
ADMIT_COLUMNS = "a.status, a.original_id, a.original_reply, a.charged, a.suppressed, a.reasons"
# relay_admit_extras: tags, metadata and send_at onto the row just admitted, in the same statement
ADMIT_ONE_SQL = (
    f"SELECT {ADMIT_COLUMNS} FROM relay_admit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) AS a "
    "CROSS JOIN LATERAL relay_admit_extras($1, a.status, $15::jsonb, $16::jsonb, $17::timestamptz) AS x"
)
ADMIT_MANY_SQL = (
    f"SELECT {ADMIT_COLUMNS} "
    "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], "
    "            $7::integer[], $8::bigint[], $9::integer[], $10::text[], $11::bytea[], $12::text[], "
    "            $13::text[], $14::text[], $15::jsonb[], $16::jsonb[], $17::timestamptz[]) "
    "     WITH ORDINALITY AS u(id, channel, key_id, account_id, sender, recipients, size, unit, cap, idem, fp, "
    "                          subject, free, presuppressed, tags, meta, send_at, n) "
    "CROSS JOIN LATERAL relay_admit(u.id, u.channel, u.key_id, u.account_id, u.sender, "
    "                               string_to_array(u.recipients, E'\\n'), u.size, u.unit, u.cap, u.idem, u.fp, "
    "                               u.subject, string_to_array(u.free, E'\\n'), "
    "                               string_to_array(u.presuppressed, E'\\n')) AS a "
    "CROSS JOIN LATERAL relay_admit_extras(u.id, a.status, u.tags, u.meta, u.send_at) AS x ORDER BY u.n"
)


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
    refused: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Admit:
    """The arguments of one relay_admit call."""

    message_id: uuid.UUID
    channel: str
    key_id: str
    account_id: int
    sender: str
    recipients: tuple[str, ...]
    size: int
    unit: int
    cap: int
    idempotency_key: str | None
    fingerprint: bytes | None
    subject: str | None
    free: tuple[str, ...]
    presuppressed: tuple[str, ...]
    extras: Extras = NO_EXTRAS


@dataclass(frozen=True, slots=True)
class _Open:
    """The arguments of one relay_lease call."""

    key_id: str
    default_limit: int
    want: int
    back_second: int | None
    back: int


def _open_result(record: asyncpg.Record) -> OpenResult:
    return OpenResult(float(record["retry_after"]), bool(record["enabled"]), int(record["credits"]),
                      int(record["granted"]), int(record["second"]), float(record["seconds_left"]))


def _admission(record: asyncpg.Record) -> Admission:
    return Admission.from_sql(record["status"], record["original_id"], record["original_reply"],
                              int(record["charged"]), record["suppressed"], record["reasons"])


@translated
class SendStore(StoreBase):
    """Concurrent sends share statements and commits: one round trip for each step's lot."""

    def _init_send(self) -> None:
        self.opener: Batcher[_Open, OpenResult] = Batcher(self._open_one, self._open_many,
                                                          item_error=item_error)
        self.admitter: Batcher[_Admit, Admission] = Batcher(self._admit_one, self._admit_many,
                                                            item_error=item_error)
        self.finalizer: Batcher[_Final, bool] = Batcher(self._finalize_one, self._finalize_many,
                                                        item_error=item_error)

    async def load_principal(self, key_id: str) -> Principal | None:
        """A key with its account's senders and suppression list, in one round trip; None when unknown."""
        record = await self.pool.fetchrow(
            "SELECT k.id, k.digest, k.enabled, k.account_id, "
            " coalesce((SELECT json_agg(json_build_array(s.pattern, s.daily_cap))::text "
            "           FROM senders s WHERE s.account_id = k.account_id), '[]') AS senders, "
            " coalesce((SELECT json_object_agg(x.address, x.reason)::text FROM suppressions x "
            "           WHERE x.account_id = k.account_id "
            "             AND (x.expires_at IS NULL OR x.expires_at > clock_timestamp())), '{}') AS suppressed "
            "FROM api_keys k WHERE k.id = $1", key_id,
        )
        if record is None:
            return None
        senders = tuple(SenderRule(p, c) for p, c in json.loads(record["senders"]))
        return Principal(record["id"], bytes(record["digest"]), record["enabled"], record["account_id"], senders,
                         json.loads(record["suppressed"]))

    async def open_call(self, key_id: str, default_limit: int, *, want: int = 1,
                        back_second: int | None = None, back: int = 0) -> OpenResult:
        """Count a call against the key's rolling minute and read the balance (one round trip;
        calls made while another is in flight share the next one, store/batch.py). want > 1 asks
        for a lease of that many calls of the current second; back gives back the unused calls of
        an earlier lease of back_second first (relay/rate_lease.py)."""
        return await self.opener(_Open(key_id, default_limit, want, back_second, back))

    async def give_back_calls(self, key_id: str, second: int, calls: int) -> None:
        """Take calls back out of second's bucket of the key's window (an instance's unspent lease,
        relay/rate_lease.py); nothing when that second has left the window."""
        await self.pool.execute(GIVE_BACK_SQL, key_id, second, calls)

    async def _open_one(self, o: _Open) -> OpenResult:
        record = await self.pool.fetchrow(OPEN_CALL_SQL, o.key_id, o.default_limit, o.want, o.back_second, o.back)
        assert record is not None
        return _open_result(record)

    async def _open_many(self, batch: Sequence[_Open]) -> list[OpenResult]:
        ordered, order = in_lock_order(batch, lambda o: o.key_id)
        records = await self.pool.fetch(OPEN_MANY_SQL, [o.key_id for o in ordered],
                                        [o.default_limit for o in ordered], [o.want for o in ordered],
                                        [o.back_second for o in ordered], [o.back for o in ordered])
        return unsorted([_open_result(r) for r in records], order)

    async def admit(self, message_id: uuid.UUID, channel: str, key_id: str, account_id: int,
                    sender: str, recipients: Sequence[str], size: int, unit: int, cap: int,
                    idempotency_key: str | None = None, fingerprint: bytes | None = None, *,
                    subject: str | None = None, free: Sequence[str] = (),
                    presuppressed: Sequence[str] = (), extras: Extras = NO_EXTRAS) -> Admission:
        """Idempotency, the suppression list, pre-flight, debit, cap, the write-ahead row with its
        recipients and the outcome's events in one round trip (batched with concurrent admits into
        one statement and one commit, store/batch.py). The cost is unit per recipient neither
        suppressed nor in free; presuppressed recipients are skipped as if on the list. extras (tags,
        metadata, send_at) are written onto the row in the same statement (relay_admit_extras)."""
        return await self.admitter(_Admit(message_id, channel, key_id, account_id, sender, tuple(recipients),
                                          size, unit, cap, idempotency_key, fingerprint, subject,
                                          tuple(free), tuple(presuppressed), extras))

    async def _admit_one(self, a: _Admit) -> Admission:
        record = await self.pool.fetchrow(
            ADMIT_ONE_SQL, a.message_id, a.channel, a.key_id, a.account_id, a.sender, list(a.recipients),
            a.size, a.unit, a.cap, a.idempotency_key, a.fingerprint, a.subject, list(a.free),
            list(a.presuppressed), a.extras.tags, a.extras.metadata, a.extras.send_at,
        )
        assert record is not None
        return _admission(record)

    async def _admit_many(self, batch: Sequence[_Admit]) -> list[Admission]:
        # relay_admit locks the idempotency key's row, then the account, then the sender's count
        ordered, order = in_lock_order(batch, lambda a: (a.account_id, a.idempotency_key or "", a.sender))
        columns: list[list[Any]] = [
            [a.message_id for a in ordered], [a.channel for a in ordered], [a.key_id for a in ordered],
            [a.account_id for a in ordered], [a.sender for a in ordered],
            [_SEP.join(a.recipients) for a in ordered], [a.size for a in ordered], [a.unit for a in ordered],
            [a.cap for a in ordered], [a.idempotency_key for a in ordered], [a.fingerprint for a in ordered],
            [a.subject for a in ordered], [_SEP.join(a.free) for a in ordered],
            [_SEP.join(a.presuppressed) for a in ordered],
            [a.extras.tags for a in ordered], [a.extras.metadata for a in ordered],
            [a.extras.send_at for a in ordered],
        ]
        records = await self.pool.fetch(ADMIT_MANY_SQL, *columns)
        return unsorted([_admission(r) for r in records], order)

    async def store_queued_body(self, message_id: uuid.UUID, mail_from: str,
                                recipients: Sequence[str], data: bytes | bytearray) -> None:
        """Keep a queued message's envelope and data until it is delivered."""
        await self.pool.execute(
            "INSERT INTO queued_bodies (message_id, mail_from, recipients, data) "
            "VALUES ($1, $2, $3, $4)", message_id, mail_from, list(recipients), data,
        )

    async def finalize(self, message_id: uuid.UUID, status: str, refund: int,
                       upstream_reply: str | None, failure_code: int | None, *, retryable: bool = False,
                       account_id: int = 0, refused: Sequence[str] = ()) -> bool:
        """Record the fate of a message and refund (at most once); False if it was already final.

        retryable: the failure was transient, so the message's idempotency key is released.
        Calls made while another is in flight are batched into one transaction (store/batch.py);
        account_id, the message's account, orders a batch as the admits are ordered; refused, the
        recipients the upstream refused while taking the others. The outcome's events commit with it.
        """
        return await self.finalizer(_Final(message_id, status, refund, upstream_reply, failure_code, retryable,
                                           account_id, tuple(refused)))

    async def _finalize_one(self, f: _Final) -> bool:
        return bool(await self.pool.fetchval(FINALIZE_SQL, f.message_id, f.status, f.refund, f.reply,
                                             f.failure_code, f.retryable, list(f.refused)))

    async def _finalize_many(self, batch: Sequence[_Final]) -> list[bool]:
        # relay_finalize once per row, in lock order, in one statement's transaction
        batch, order = in_lock_order(batch, lambda f: f.account_id)
        results = await self.pool.fetchval(
            "SELECT array_agg(relay_finalize(u.id, u.status, u.refund, u.reply, u.code, u.retryable, "
            "                                string_to_array(u.refused, E'\\n')) ORDER BY u.n) "
            "FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::integer[], $6::boolean[], $7::text[])"
            "     WITH ORDINALITY AS u(id, status, refund, reply, code, retryable, refused, n)",
            [f.message_id for f in batch], [f.status for f in batch], [f.refund for f in batch],
            [f.reply for f in batch], [f.failure_code for f in batch], [f.retryable for f in batch],
            [_SEP.join(f.refused) for f in batch],
        )
        return unsorted([bool(r) for r in results], order)

    async def stranded(self, older_than_seconds: float,
                       live: Sequence[uuid.UUID] = ()) -> list[dict[str, Any]]:
        """Rows a crash left between admit and finalize: queued without a body too long, or
        'sending' and either admitted by an instance that holds no lock (it died: at once) or,
        for this instance's rows and rows from before instance ids, 'sending' too long and not
        among live (the sends and finalize retries this process still has in hand)."""
        records = await self.pool.fetch(
            "WITH c AS MATERIALIZED ("
            " SELECT m.id, m.status, m.credits_charged, m.account_id, m.instance_id, m.updated_at"
            " FROM messages m WHERE m.status = 'sending' OR (m.status = 'queued'"
            "  AND m.updated_at < clock_timestamp() - make_interval(secs => $1)"
            "  AND NOT EXISTS (SELECT 1 FROM queued_bodies b WHERE b.message_id = m.id))) "
            "SELECT c.id, c.status, c.credits_charged, c.account_id FROM c WHERE c.status = 'queued'"
            " OR (c.instance_id IS NOT DISTINCT FROM $2 OR c.instance_id IS NULL)"
            "    AND c.updated_at < clock_timestamp() - make_interval(secs => $1) AND c.id <> ALL($3::uuid[])"
            " OR c.instance_id IS DISTINCT FROM $2 AND c.instance_id IS NOT NULL"
            "    AND pg_try_advisory_xact_lock($4, c.instance_id)",
            older_than_seconds, self.instance_id, list(live), LOCK_CLASS,
        )
        return [dict(r.items()) for r in records]
