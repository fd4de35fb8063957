"""The cap-queue worker: delivers queued messages once due, paced, retried, refunded when they fail."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from relay.config import LimitsConfig, QueueConfig
from relay.events.bounce_intake import envelope_sender
from relay.events.simulator import Simulator
from relay.notify_loop import NotifyLoop
from relay.settle import settle
from relay.store.queue import QUEUE_CHANNEL, Claim
from relay.store.store import Store
from relay.upstream.base import Delivery, Upstream, Verdict
from relay.upstream.classify import FailureCode

log = logging.getLogger(__name__)

PROMISE = timedelta(hours=24)  # docs/contract.md: a queued message is delivered within 24 hours of acceptance


def utcnow() -> datetime:
    """The real clock (tests inject another)."""
    return datetime.now(UTC)


@dataclass
class Tally:
    """What one pass of the worker did."""

    sent: int = 0
    failed: int = 0
    retried: int = 0

    @property
    def handled(self) -> int:
        """Messages settled or rescheduled."""
        return self.sent + self.failed + self.retried


def backoff(attempts: int, queue: QueueConfig) -> timedelta:
    """Delay before the next try after `attempts` failed ones: exponential, capped."""
    seconds = queue.retry_base_seconds * 2 ** max(0, attempts - 1)
    return timedelta(seconds=min(seconds, queue.retry_max_seconds))


@dataclass
class QueueWorker:
    """Claims due messages with FOR UPDATE SKIP LOCKED (so instances share the work) and delivers them."""

    store: Store
    upstream: Upstream
    limits: LimitsConfig
    queue: QueueConfig
    clock: Callable[[], datetime] = utcnow
    bounce_domain: str = ""  # set: VERP envelope senders, as the pipeline's
    key_secret: bytes = b""
    _loop: NotifyLoop = field(init=False)

    def __post_init__(self) -> None:
        self._loop = NotifyLoop("queue worker", self.store, QUEUE_CHANNEL, self.queue.poll_seconds)

    async def deliver_due(self, *, sender: str | None = None, limit: int | None = None) -> Tally:
        """Deliver what is due now, one message at a time at the configured pace."""
        tally = Tally()
        interval = 1.0 / self.queue.rate_per_second
        while (limit is None or tally.handled < limit) and not self._loop.stopping:
            started = asyncio.get_running_loop().time()
            async with self.store.claim_queued(self.clock(), sender) as claim:
                if claim is None:
                    break
                await self._deliver(claim, tally)
            spare = interval - (asyncio.get_running_loop().time() - started)
            if spare > 0:
                await asyncio.sleep(spare)
        return tally

    async def _deliver(self, claim: Claim, tally: Tally) -> None:
        item = claim.item
        now = self.clock()
        # a scheduled send's 24 hours start at its send_at, not when it was accepted
        deadline = max(item.created_at, item.scheduled_at or item.created_at) + PROMISE
        if now >= deadline:
            # never tried in time (relay was down): a late transactional mail can do harm; refund
            await claim.finalize("failed", item.credits_charged, "not delivered within 24 hours of acceptance",
                                 int(FailureCode.EXPIRED))
            tally.failed += 1
            return
        if item.recipients:
            mail_from = item.mail_from
            if self.bounce_domain:
                mail_from = envelope_sender(item.message_id, None, self.key_secret, self.bounce_domain)
            delivery = await self.upstream.deliver(mail_from, item.recipients, item.data)
        else:  # only mailbox-simulator recipients (relay/events/simulator.py): nothing leaves
            delivery = Delivery(Verdict.SENT, Simulator.REPLY)
        if delivery.verdict is not Verdict.TRANSIENT:
            outcome = settle(delivery, item.credits_charged, self.limits.credits_per_recipient)
            await claim.finalize(outcome.status, outcome.refund, outcome.reply, outcome.failure_code,
                                 delivery.refused)
            if outcome.status == "sent":
                tally.sent += 1
            else:
                tally.failed += 1
            return
        deferred = delivery.reply[:1] == "4"  # the upstream answered "try later" (not a timeout)
        retry = now + backoff(item.attempts + 1, self.queue)
        if retry >= deadline:
            code = FailureCode.DEFERRED_UNTIL_EXPIRED if deferred or item.deferrals else FailureCode.EXPIRED
            await claim.finalize("failed", item.credits_charged, delivery.reply, int(code))
            tally.failed += 1
            return
        await claim.retry_at(retry, delivery.reply, delivery.failure_code, deferred)
        tally.retried += 1

    def stop(self) -> None:
        """Finish the delivery in hand, claim no more, and let run() return (graceful shutdown:
        cancelling a delivery would roll its claim back after the upstream may have taken it)."""
        self._loop.stop()

    def wake(self) -> None:
        """Look for due messages now (a NOTIFY arrived)."""
        self._loop.wake()

    async def run(self) -> None:
        """Until stop(): deliver what is due, then sleep until woken (a NOTIFY on the queue's channel)
        or the poll interval passes."""
        await self._loop.run(self._pass)

    async def _pass(self) -> bool:
        tally = await self.deliver_due()
        if tally.handled:
            log.info("queue: %d sent, %d failed, %d to retry", tally.sent, tally.failed, tally.retried)
        return bool(tally.handled)
