"""The webhook outbox worker: claims due deliveries (lease + SKIP LOCKED), POSTs each signed with
the endpoint's secrets, records every attempt, schedules retries. Runs beside the send path and
never in it: sending only writes event rows (relay_event)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from relay.errors import StoreUnavailable
from relay.events.config import WebhooksConfig
from relay.events.payload import webhook_body
from relay.notify_loop import NotifyLoop
from relay.outbound import signing
from relay.outbound.client import HttpClient, HttpResult
from relay.outbound.ssrf import Policy
from relay.store.store import Store
from relay.store.webhooks import WEBHOOK_CHANNEL, ClaimedDelivery
from relay.webhooks import schedule

log = logging.getLogger(__name__)

_KEEP_RESPONSE = 1024
# After a wake-up (a NOTIFY per committed send, a freed slot), wait this long before claiming, so
# that one claim takes the deliveries of many sends: at hundreds of sends per second a claim per
# NOTIFY would be a transaction per delivery. Webhooks are at most this much later.
GATHER_SECONDS = 0.05


def _response_text(result: HttpResult) -> str | None:
    if not result.body:
        return None
    # PostgreSQL text cannot hold NUL: one would fail the record every time (POSTed again every lease)
    return result.body[:_KEEP_RESPONSE].decode("utf-8", "replace").replace("\x00", "\ufffd")


class _Attempt(NamedTuple):
    """One attempt as recorded: its outcome, the next try (for 'retry'), what the endpoint answered."""

    outcome: str  # 'delivered' | 'retry' | 'failed'
    when: datetime | None
    status: int = 0
    response: str | None = None
    error: str | None = None
    disable: str | None = None  # disable the endpoint, for this reason


def _retry_or_fail(item: ClaimedDelivery, now: datetime,
                   asked: timedelta | None = None) -> tuple[str, datetime | None]:
    """After a failed attempt: retry on schedule (or later, when the endpoint asked for that), or give up."""
    delay = schedule.next_delay(item.attempt)
    if delay is None:
        return "failed", None
    if asked is not None and asked > delay:
        delay = asked
    return "retry", now + delay


def _judged(item: ClaimedDelivery, result: HttpResult, now: datetime) -> _Attempt:
    """What an endpoint's answer (or its silence) means for the delivery."""
    error = None if result.error is None else f"{result.error}: {result.detail}"
    if result.error is None and not result.ok and 300 <= result.status < 400:
        error = "redirect not followed"
    response = _response_text(result)
    if result.ok:
        return _Attempt("delivered", None, result.status, response, error)
    if result.status == schedule.GONE:
        return _Attempt("failed", None, result.status, response, error, "the endpoint answered 410 Gone")
    asked = None
    if result.status in schedule.RETRY_AFTER_STATUSES:
        asked = schedule.retry_after(result.headers.get("retry-after"), now)
    return _Attempt(*_retry_or_fail(item, now, asked), result.status, response, error)


class WebhookWorker:
    """Drains the outbox: up to cfg.concurrency POSTs in flight, woken by NOTIFY or every poll_seconds."""

    def __init__(self, store: Store, cfg: WebhooksConfig, client: HttpClient | None = None) -> None:
        self.store = store
        self.cfg = cfg
        self.client = client or HttpClient(Policy(allow_private=cfg.allow_private_targets),
                                           limit=cfg.concurrency, user_agent="relay-webhooks")
        self._loop = NotifyLoop("webhook worker", store, WEBHOOK_CHANNEL, cfg.poll_seconds, GATHER_SECONDS)
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Look for due deliveries now."""
        self._loop.wake()

    def stop(self) -> None:
        """Claim nothing more; POSTs in flight finish (or time out) in stop_and_wait."""
        self._loop.stop()

    async def drain_once(self) -> int:
        """Claim what is due (as many as there are free slots) and start delivering it; how many."""
        free = self.cfg.concurrency - len(self._tasks)
        if free <= 0:
            return 0
        claimed = await self.store.claim_deliveries(free, self.cfg.lease_seconds)
        for item in claimed:
            task = asyncio.create_task(self._deliver(item), name=f"webhook-{item.id}")
            self._tasks.add(task)
            task.add_done_callback(self._done)
        return len(claimed)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._loop.wake()  # a slot is free

    async def _deliver(self, item: ClaimedDelivery) -> None:
        started = time.monotonic()
        result: HttpResult | None = None
        try:
            body = webhook_body(item.event)
            headers = {"content-type": "application/json",
                       **signing.signed_headers(item.secrets, str(item.event["id"]), body)}
            result = await self.client.post(item.url, body, headers, timeout=self.cfg.timeout_seconds,
                                            max_redirects=0)
            attempt = _judged(item, result, datetime.now(UTC))
        except Exception as exc:
            # recorded all the same: an attempt never recorded keeps its delivery pending, to be
            # claimed and POSTed again every lease_seconds, forever
            log.exception("webhook delivery %s: unexpected error, recorded as a failed attempt", item.id)
            outcome, when = _retry_or_fail(item, datetime.now(UTC))
            attempt = _Attempt(outcome, when, status=0 if result is None else result.status,
                               error=f"internal error: {type(exc).__name__}")  # the details: in the log
        latency_ms = int((time.monotonic() - started) * 1000)
        for retry in range(3):
            try:
                recorded = await self.store.record_attempt(
                    item, attempt.outcome, attempt.when, status_code=attempt.status, latency_ms=latency_ms,
                    response=attempt.response, error=attempt.error, disable_reason=attempt.disable,
                    disable_after_seconds=self.cfg.disable_after_days * 86400)
                if not recorded:
                    log.warning("webhook delivery %s: lease lost before the attempt was recorded", item.id)
                return
            except StoreUnavailable:
                # the lease runs out and the delivery is tried again: at least once, never lost
                log.warning("webhook delivery %s: could not record attempt (try %d)", item.id, retry + 1)
                await asyncio.sleep(0.5 * (retry + 1))

    async def run(self) -> None:
        """Until stop(): claim and deliver, then wait to be woken or for the poll interval."""
        await self._loop.run(self._pass)

    async def _pass(self) -> bool:
        return await self.drain_once() > 0

    async def stop_and_wait(self, grace: float) -> None:
        """Stop claiming; wait up to grace for POSTs in flight, cancel the rest (their leases run out
        and another instance, or the next start, tries them again), close the client."""
        self.stop()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
        await self.client.close()
