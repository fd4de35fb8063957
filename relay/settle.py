"""Settlement: what an upstream's answer means for the log row and the credits, for every sender of mail."""

from __future__ import annotations

from dataclasses import dataclass

from relay.upstream.base import Delivery, Verdict


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a delivery attempt is recorded: final status, credits back, reply, failure code."""

    status: str  # 'sent' or 'failed'
    refund: int
    reply: str
    failure_code: int | None
    retryable: bool  # a transient failure: the idempotency key is released so a retry can run


def settle(delivery: Delivery, charged: int, credits_per_recipient: int) -> Settlement:
    """Sent: refund the recipients the upstream refused. Failed: refund everything charged."""
    if delivery.verdict is Verdict.SENT:
        return Settlement("sent", len(delivery.refused) * credits_per_recipient, delivery.reply, None, False)
    return Settlement("failed", charged, delivery.reply, delivery.failure_code,
                      retryable=delivery.verdict is not Verdict.PERMANENT)
