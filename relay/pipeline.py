"""The one send pipeline (docs/contract.md steps 1-8): channels call it and translate its Result, nothing else."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from relay import keys, metrics
from relay.addresses import is_valid_address, matching_rule, normalize
from relay.config import LimitsConfig
from relay.domain import NO_EXTRAS, AdmitStatus, Extras, Principal, SenderRule
from relay.errors import StoreUnavailable
from relay.events.config import EventsConfig
from relay.events.simulator import Simulator
from relay.events.verp import deliver_each
from relay.outcomes import Outcome, Result, reject
from relay.rate_lease import RateLeases
from relay.settle import settle
from relay.store.store import Store
from relay.upstream.base import Delivery, Upstream, Verdict
from relay.upstream.classify import FailureCode

log = logging.getLogger(__name__)

# What "the database hiccuped" looks like from here (the store translates its driver's errors):
# all of it becomes TEMPORARY.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (StoreUnavailable,)
_FINALIZE_TRIES = 3
_FINALIZE_BACKOFF_MAX = 5.0
_KEY_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Opened:
    """A counted call (step 2 passed): the key, the balance read with it, the channel."""

    principal: Principal
    credits: int
    channel: str


@dataclass(frozen=True, slots=True)
class Transaction:
    """An opened send: the key passed, the call was counted, the sender is authorized."""

    principal: Principal
    mail_from: str
    rule: SenderRule
    channel: str


@dataclass(frozen=True, slots=True)
class Message:
    """What a channel hands over after parsing: the envelope, the From: addresses, the bytes to relay."""

    recipients: tuple[str, ...]
    from_addresses: tuple[str, ...]
    data: bytes | bytearray  # SMTP hands over its receive buffer, prepared in place
    has_body: bool
    size: int  # what the size limit is checked against (docs/contract.md: SMTP data; API html + text)
    idempotency_key: str | None = None
    fingerprint: bytes | None = None  # SHA-256 of the payload, compared on a repeated key
    crlf_verified: bool = False  # the channel checked there is no bare CR or LF in data
    dot_free: bool = False  # the channel checked that no line of data starts with a dot
    from_display_addresses: tuple[str, ...] = ()  # addresses a From: display name shows
    body_8bit: bool = False  # SMTP BODY=8BITMIME: passed on to the upstream
    smtputf8: bool = False  # internationalized addresses or headers (RFC 6531): the upstream must offer SMTPUTF8
    subject: str | None = None  # for the log row
    extras: Extras = NO_EXTRAS  # tags, metadata, send_at (issue 18), stored on the log row


class Pipeline:
    """The steps of docs/contract.md, in order, over a Store and an Upstream."""

    def __init__(self, store: Store, upstream: Upstream, limits: LimitsConfig, key_secret: bytes,
                 key_cache_seconds: float = 0.0, events: EventsConfig | None = None,
                 bounce_domain: str = "") -> None:
        self.store = store
        self.upstream = upstream
        self.limits = limits
        self.key_secret = key_secret
        self.key_cache_seconds = key_cache_seconds
        self.simulator = Simulator(events or EventsConfig())
        self.leases = RateLeases(store, default_limit=limits.calls_per_minute, max_lease=limits.rate_lease,
                                 price=limits.credits_per_recipient)
        self.bounce_domain = bounce_domain  # set: VERP envelope senders (relay/events/verp.py)
        self._principals: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self.in_flight: set[asyncio.Task[Result]] = set()  # sends that outlive their caller
        # admitted messages whose outcome is not recorded yet (relaying, or a finalize being
        # retried): the recovery sweep leaves them alone
        self.unsettled: set[uuid.UUID] = set()
        self.settling: set[asyncio.Task[None]] = set()  # finalize retries after a database blip

    async def _principal(self, key_id: str, *, fresh: bool = False) -> Principal | None:
        """A key's lookup, reused for key_cache_seconds (the rate-limit call and the admit re-check 'enabled')."""
        now = time.monotonic()
        cached = None if fresh else self._cached(key_id, now)
        if cached is not None:
            return cached
        principal = await self.store.load_principal(key_id)
        if principal is not None and self.key_cache_seconds > 0:
            self._principals[key_id] = (now, principal)
            self._principals.move_to_end(key_id)
            while len(self._principals) > _KEY_CACHE_SIZE:
                self._principals.popitem(last=False)
        return principal

    def _cached(self, key_id: str, now: float) -> Principal | None:
        """The key's lookup when the cache has one younger than key_cache_seconds."""
        cached = self._principals.get(key_id)
        return cached[1] if cached is not None and now - cached[0] < self.key_cache_seconds else None

    def forget_account(self, account_id: int) -> None:
        """Drop cached lookups of an account's keys (its suppression list changed in this process)."""
        for key_id in [k for k, (_, p) in self._principals.items() if p.account_id == account_id]:
            del self._principals[key_id]

    # -- step 1 --------------------------------------------------------------------------

    async def authenticate(self, raw_key: str | None) -> Principal | Result:
        """Key check: present, known, enabled."""
        if not raw_key:
            return reject(Outcome.KEY_MISSING, "an API key is required")
        parsed = keys.parse_key(raw_key)
        if parsed is None:
            return reject(Outcome.KEY_INVALID, "invalid API key")
        try:
            principal = await self._principal(parsed.key_id)
            if principal is not None and not keys.verify(self.key_secret, parsed.secret, principal.digest):
                # the cached lookup may predate a rotation: the new secret works at once
                principal = await self._principal(parsed.key_id, fresh=True)
        except TRANSIENT_ERRORS:
            log.exception("key lookup failed")
            return reject(Outcome.TEMPORARY, "temporary failure, try again later", retry_after=5)
        if principal is None or not keys.verify(self.key_secret, parsed.secret, principal.digest):
            return reject(Outcome.KEY_INVALID, "invalid API key")
        if not principal.enabled:
            return reject(Outcome.KEY_DISABLED, "this API key is disabled")
        return principal

    # -- step 2, then step 3 (sender) and the early part of 5 -----------------------------

    async def open_call(self, principal: Principal, channel: str) -> Opened | Result:
        """Step 2: count the call against the key's rolling minute (and re-check the key is enabled)."""
        try:
            opened = await self.leases.open(principal.key_id)
        except TRANSIENT_ERRORS:
            log.exception("rate-limit call failed")
            return reject(Outcome.TEMPORARY, "temporary failure, try again later", retry_after=5)
        if not opened.enabled:
            return reject(Outcome.KEY_DISABLED, "this API key is disabled")
        if opened.retry_after > 0:
            wait = max(1, math.ceil(opened.retry_after))
            return reject(Outcome.RATE_LIMITED, f"rate limit exceeded, retry in {wait} seconds", retry_after=wait)
        return Opened(principal, opened.credits, channel)

    def authorize(self, opened: Opened, mail_from: str) -> Transaction | Result:
        """Step 3 for the sender, and a first pre-flight: is there credit for one recipient at all."""
        if not is_valid_address(mail_from):
            return reject(Outcome.INVALID, f"sender address {mail_from!r} is not valid", enhanced="5.1.7")
        rule = matching_rule(mail_from, opened.principal.senders)
        if rule is None:
            return reject(Outcome.INVALID, f"sender {mail_from} is not authorized for this account",
                          enhanced="5.7.1")
        if opened.credits < self.limits.credits_per_recipient:
            return reject(Outcome.INSUFFICIENT_CREDITS, "insufficient credits")
        return Transaction(opened.principal, normalize(mail_from), rule, opened.channel)

    async def begin(self, principal: Principal, mail_from: str, channel: str) -> Transaction | Result:
        """Steps 2 and 3 (sender) together, as SMTP's MAIL FROM needs them. The key's lookup (senders,
        suppression list) is refreshed when older than key_cache_seconds: a connection outlives it."""
        cached = self._cached(principal.key_id, time.monotonic())
        # a stale lookup is reloaded beside the rate-limit call, not before it (one wait, not two)
        lookup = None if cached else asyncio.ensure_future(self._principal(principal.key_id))
        opened = await self.open_call(cached or principal, channel)
        if lookup is not None:
            try:
                fresh = await lookup
            except TRANSIENT_ERRORS:
                log.exception("key lookup failed")
                return reject(Outcome.TEMPORARY, "temporary failure, try again later", retry_after=5)
            if fresh is not None and isinstance(opened, Opened):
                opened = dataclasses.replace(opened, principal=fresh)
        if isinstance(opened, Result):
            return opened
        return self.authorize(opened, mail_from)

    # -- step 3 (recipients), step 4 -----------------------------------------------------

    def suppression(self, principal: Principal, address: str) -> str | None:
        """The reason a recipient is on the account's suppression list as loaded with the key (or a
        simulator suppressed@ address), None when it may be mailed (relay_admit checks again)."""
        if self.simulator.suppresses(address):
            return "simulator"
        return principal.suppressed.get(address.lower())

    def check_recipient(self, address: str, already: int) -> Result | None:
        """A recipient may be added: valid, and not beyond max_recipients."""
        if already >= self.limits.max_recipients:
            return reject(Outcome.INVALID, f"more than {self.limits.max_recipients} recipients",
                          enhanced="5.5.3")
        if not is_valid_address(address):
            return reject(Outcome.INVALID, f"recipient address {address!r} is not valid",
                          enhanced="5.1.3")
        return None

    def check_size(self, size: int) -> Result | None:
        """The message fits the size limit."""
        if size > self.limits.max_message_bytes:
            return reject(Outcome.TOO_LARGE,
                          f"message exceeds the maximum size of {self.limits.max_message_bytes} bytes",
                          enhanced="5.3.4")
        return None

    def _validate(self, txn: Transaction, message: Message) -> Result | None:
        """Step 3 on the whole message."""
        if not message.recipients:
            return reject(Outcome.INVALID, "at least one recipient is required", enhanced="5.5.1")
        for i, address in enumerate(message.recipients):
            problem = self.check_recipient(address, i)
            if problem:
                return problem
        if not message.has_body:
            return reject(Outcome.INVALID, "the message has no body", enhanced="5.6.0")
        if not message.from_addresses:
            return reject(Outcome.INVALID, "the message has no valid From: header", enhanced="5.6.0")
        key = message.idempotency_key
        if key is not None and (not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable()):
            return reject(Outcome.INVALID, "Idempotency-Key must be 1-255 printable ASCII characters",
                          enhanced="5.6.0")
        for address in message.from_addresses:
            if matching_rule(address, txn.principal.senders) is None:
                return reject(Outcome.INVALID,
                              f"From: address {address} is not authorized for this account",
                              enhanced="5.7.1")
        if not self.limits.allow_address_display_names:
            # '"ceo@bank.com" <app@example.com>': most mail clients show only the name
            for shown in message.from_display_addresses:
                if matching_rule(shown, txn.principal.senders) is None:
                    return reject(Outcome.INVALID,
                                  f"From: display name shows the address {shown}, which is not "
                                  "authorized for this account", enhanced="5.7.1")
        return None

    # -- steps 3-8 -----------------------------------------------------------------------

    async def submit_detached(self, txn: Transaction, message: Message,
                              gone: Callable[[Result], object]) -> Result:
        """submit, run to its recorded end even when the caller is cancelled (a client that hangs
        up after its send may be admitted); tracked in in_flight so shutdown can wait for it.

        gone: what the channel does with a result nobody waits for any more (it counts it, as its
        answer would have: metrics are counted where a channel answers, see metrics.counted)."""
        task = asyncio.ensure_future(self.submit(txn, message))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda t: None if t.cancelled() or t.exception() else gone(t.result()))
            raise

    async def submit(self, txn: Transaction, message: Message) -> Result:
        """Validate, size, pre-flight, debit, cap, relay, finalize; the Result says what happened."""
        started = time.monotonic()
        result = self._validate(txn, message) or self.check_size(message.size)
        if result is None:
            result = await self._admit_and_relay(txn, message)
        metrics.RELAY_SECONDS.labels(txn.channel).observe(time.monotonic() - started)
        return result

    async def _admit_and_relay(self, txn: Transaction, message: Message) -> Result:
        message_id = uuid.uuid4()
        cap = self.limits.default_daily_cap if txn.rule.daily_cap is None else txn.rule.daily_cap
        if message.extras.send_at is not None:
            cap = 0  # admitted as queued without counting against the cap; due at send_at
        simulated = self.simulator.recipients(message.recipients)
        try:
            admission = await self.store.admit(
                message_id, txn.channel, txn.principal.key_id, txn.principal.account_id,
                txn.mail_from, message.recipients, message.size, self.limits.credits_per_recipient, cap,
                message.idempotency_key, message.fingerprint, subject=message.subject,
                free=simulated if self.simulator.free else (),
                presuppressed=[r for r in simulated if self.simulator.suppresses(r)],
                extras=message.extras,
            )
        except TRANSIENT_ERRORS:
            # if the admit committed before the error reached us, the recovery sweep refunds it
            log.exception("admit failed")
            return reject(Outcome.TEMPORARY, "temporary failure, try again later", retry_after=5)
        status = admission.status
        mid = str(message_id)
        skipped = tuple(address for address, _ in admission.suppressed)
        if status is AdmitStatus.REPLAY:
            return Result(Outcome(admission.replayed_outcome), str(admission.original_id),
                          reason=admission.original_reply or "", replayed=True)
        if status is AdmitStatus.IDEMPOTENCY_MISMATCH:
            return reject(Outcome.IDEMPOTENCY_MISMATCH,
                          "this Idempotency-Key was already used for a different message", enhanced="5.7.0")
        if status is AdmitStatus.IDEMPOTENCY_IN_FLIGHT:
            return reject(Outcome.IDEMPOTENCY_IN_FLIGHT,
                          "a message with this Idempotency-Key is still being processed", retry_after=5)
        if status is AdmitStatus.KEY_DISABLED:
            return reject(Outcome.KEY_DISABLED, "this API key is disabled")
        if status is AdmitStatus.INSUFFICIENT_CREDITS:
            return reject(Outcome.INSUFFICIENT_CREDITS, f"insufficient credits: {admission.charged} needed")
        if status is AdmitStatus.INSUFFICIENT_FUNDS:
            return reject(Outcome.INSUFFICIENT_FUNDS,
                          "insufficient funds: a concurrent send used the balance")
        if status is AdmitStatus.SUPPRESSED:
            return Result(Outcome.SUPPRESSED, mid, reason="every recipient is on the suppression list",
                          suppressed=skipped)
        cost = admission.charged
        if status is AdmitStatus.QUEUED:
            return await self._queue(message_id, txn, message, cost, skipped)
        self.unsettled.add(message_id)
        relayed = [r for r in message.recipients if r not in skipped and r not in simulated]
        if not relayed:  # only simulator recipients: nothing leaves, the outcome is simulated
            delivery = Delivery(Verdict.SENT, self.simulator.REPLY)
        else:
            try:
                delivery = await self._relay(message_id, txn, message, relayed)
            except Exception:
                # a bug, not an upstream answer: the mail did not leave, so the debit goes back now
                log.exception("delivery of %s raised", message_id)
                await self._finalize(message_id, txn, "failed", cost, "internal error during relay",
                                     int(FailureCode.SYSTEM_OTHER), retryable=True)
                return reject(Outcome.TEMPORARY, "temporary failure, try again later", retry_after=5)
        result = await self._conclude(message_id, txn, delivery, cost, skipped)
        if result.outcome is Outcome.SENT and simulated:
            await self.simulator.after_delivery(self.store, message_id, message.recipients, simulated)
        return result

    async def _relay(self, message_id: uuid.UUID, txn: Transaction, message: Message,
                     relayed: list[str]) -> Delivery:
        """Step 8's hand-over: one transaction, or with [bounces] domain one per recipient, each with
        its own b+<token> envelope sender (relay/events/verp.py)."""
        # the RFC 6152 / 6531 flags only when set: an upstream that predates them still works
        flags = {"body_8bit": True} if message.body_8bit else {}
        if message.smtputf8:
            flags["smtputf8"] = True
        if self.bounce_domain:
            return await deliver_each(self.upstream, message_id, message.recipients, relayed, message.data,
                                      self.key_secret, self.bounce_domain, crlf_verified=message.crlf_verified,
                                      dot_free=message.dot_free, **flags)
        return await self.upstream.deliver(txn.mail_from, relayed, message.data,
                                           crlf_verified=message.crlf_verified, dot_free=message.dot_free, **flags)

    async def _queue(self, message_id: uuid.UUID, txn: Transaction, message: Message,
                     cost: int, skipped: tuple[str, ...]) -> Result:
        """Over the daily cap: keep the body durably before saying 'queued'."""
        try:
            simulated = self.simulator.recipients(message.recipients)
            relayed = [r for r in message.recipients if r not in skipped and r not in simulated]
            await self.store.store_queued_body(message_id, txn.mail_from, relayed, message.data)
        except TRANSIENT_ERRORS:
            log.exception("storing a queued body failed")
            await self._finalize(message_id, txn, "failed", cost, "could not store the message",
                                 int(FailureCode.SYSTEM_OTHER), retryable=True)
            return reject(Outcome.TEMPORARY, "temporary failure, try again later", retry_after=5)
        if message.extras.send_at is not None:
            return Result(Outcome.SCHEDULED, str(message_id),
                          reason=f"scheduled for {message.extras.send_at.isoformat()}", suppressed=skipped)
        return Result(Outcome.QUEUED, str(message_id),
                      reason="over the sender's daily cap; will be delivered within 24 hours", suppressed=skipped)

    async def _conclude(self, message_id: uuid.UUID, txn: Transaction, delivery: Delivery, cost: int,
                        skipped: tuple[str, ...] = ()) -> Result:
        """Record the upstream's answer, refunding what did not leave."""
        mid = str(message_id)
        settlement = settle(delivery, cost, self.limits.credits_per_recipient)
        await self._finalize(message_id, txn, settlement.status, settlement.refund, settlement.reply,
                             settlement.failure_code, retryable=settlement.retryable, refused=delivery.refused)
        if delivery.verdict is Verdict.SENT:
            return Result(Outcome.SENT, mid, upstream_reply=delivery.reply, suppressed=skipped)
        permanent = delivery.verdict is Verdict.PERMANENT
        outcome = Outcome.RELAY_FAILED if permanent else Outcome.UPSTREAM_UNAVAILABLE
        return Result(outcome, mid, reason=delivery.reply, failure_code=delivery.failure_code,
                      upstream_reply=delivery.reply, retry_after=None if outcome is Outcome.RELAY_FAILED else 30)

    async def _finalize(self, message_id: uuid.UUID, txn: Transaction, status: str, refund: int,
                        reply: str | None, failure_code: int | None, *, retryable: bool = False,
                        refused: tuple[str, ...] = ()) -> None:
        """Finalize with a few quick retries; if the database is still away, keep retrying in the
        background until it lands (the outcome is known: losing it would log a delivered message
        as failed). The client is answered meanwhile."""
        self.unsettled.add(message_id)
        for attempt in range(_FINALIZE_TRIES):
            if await self._finalize_once(message_id, txn, status, refund, reply, failure_code,
                                         retryable=retryable, attempt=attempt, refused=refused):
                return
            if attempt + 1 < _FINALIZE_TRIES:  # short waits: the client is waiting
                await asyncio.sleep(0.2 * (attempt + 1))
        log.warning("message %s: its outcome (%s) will be recorded once the database is back", message_id, status)
        task = asyncio.ensure_future(self._finalize_until_landed(
            message_id, txn, status, refund, reply, failure_code, retryable=retryable, refused=refused))
        self.settling.add(task)
        task.add_done_callback(self.settling.discard)

    async def _finalize_until_landed(self, message_id: uuid.UUID, txn: Transaction, status: str, refund: int,
                                     reply: str | None, failure_code: int | None, *, retryable: bool,
                                     refused: tuple[str, ...]) -> None:
        attempt = _FINALIZE_TRIES
        while not await self._finalize_once(message_id, txn, status, refund, reply, failure_code,
                                            retryable=retryable, attempt=attempt, refused=refused):
            await asyncio.sleep(min(_FINALIZE_BACKOFF_MAX, 0.5 * 2 ** (attempt - _FINALIZE_TRIES)))
            attempt += 1
        log.info("message %s: outcome (%s) recorded after %d attempts", message_id, status, attempt + 1)

    async def _finalize_once(self, message_id: uuid.UUID, txn: Transaction, status: str, refund: int,
                             reply: str | None, failure_code: int | None, *, retryable: bool,
                             attempt: int, refused: tuple[str, ...] = ()) -> bool:
        """One finalize; True once the row is final (by us or, should it happen, by the sweep)."""
        try:
            landed = await self.store.finalize(message_id, status, refund, reply, failure_code,
                                               retryable=retryable, account_id=txn.principal.account_id,
                                               refused=refused)
        except TRANSIENT_ERRORS:
            if attempt < _FINALIZE_TRIES:
                log.warning("finalize of %s failed (attempt %d)", message_id, attempt + 1, exc_info=True)
            return False
        if not landed:
            # the recovery sweep got there first: the log says failed and refunded although the
            # upstream answered; an operator should know (the sweep skips unsettled rows)
            log.error("message %s was already final when its outcome (%s) came: %s", message_id, status, reply)
        self.unsettled.discard(message_id)
        return True



async def recover(store: Store, older_than_seconds: float, live: set[uuid.UUID] | None = None) -> int:
    """Resolve rows a crash left between admit and finalize: failed, fully refunded (README: Recovery).

    live: this process's unsettled messages, never touched; rows of instances that died are
    settled at once, others after older_than_seconds."""
    count = 0
    for row in await store.stranded(older_than_seconds, tuple(live or ())):
        reply = ("relay stopped before the delivery result was recorded"
                 if row["status"] == "sending" else "relay stopped before the queued message was stored")
        if await store.finalize(row["id"], "failed", row["credits_charged"], reply,
                                int(FailureCode.SYSTEM_OTHER), retryable=True, account_id=row["account_id"]):
            count += 1
    return count

