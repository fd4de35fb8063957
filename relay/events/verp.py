"""VERP delivery: with [bounces] domain set, each recipient of a message gets its own envelope sender
b+<token>@<domain> naming message and recipient, so one transaction per recipient; the answers are
combined into the one Delivery the settlement expects."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from relay.events.bounce_intake import envelope_sender
from relay.upstream.base import Delivery, Upstream, Verdict


def combine(recipients: Sequence[str], deliveries: Sequence[Delivery]) -> Delivery:
    """Sent when any recipient was taken (the others refused: refunded); else the first failure,
    transient if any was (the client may retry)."""
    taken = [r for r, d in zip(recipients, deliveries, strict=True) if d.verdict is Verdict.SENT and not d.refused]
    if taken:
        first = next(d for d in deliveries if d.verdict is Verdict.SENT and not d.refused)
        return Delivery(Verdict.SENT, first.reply, refused=tuple(r for r in recipients if r not in taken))
    failed = [d for d in deliveries if d.verdict is not Verdict.SENT] or list(deliveries)
    worst = next((d for d in failed if d.verdict is Verdict.TRANSIENT), failed[0])
    if worst.verdict is Verdict.SENT:  # every recipient refused inside a taken transaction
        return Delivery(Verdict.PERMANENT, worst.reply, worst.failure_code)
    return Delivery(worst.verdict, worst.reply, worst.failure_code, lacking=worst.lacking)


async def deliver_each(upstream: Upstream, message_id: uuid.UUID, all_recipients: Sequence[str],
                       relayed: Sequence[str], data: bytes | bytearray, secret: bytes, domain: str, *,
                       crlf_verified: bool, dot_free: bool, **flags: bool) -> Delivery:
    """One transaction per relayed recipient, each with the VERP sender of its position, concurrently."""
    # an upstream may edit a bytearray in place (DKIM signing prepends its field): several
    # transactions share one immutable copy instead, which each edits into a buffer of its own
    shared = data if len(relayed) == 1 else bytes(data)
    deliveries = await asyncio.gather(*(
        upstream.deliver(envelope_sender(message_id, list(all_recipients).index(r), secret, domain), [r], shared,
                         crlf_verified=crlf_verified, dot_free=dot_free, **flags)
        for r in relayed))
    return combine(relayed, deliveries)
