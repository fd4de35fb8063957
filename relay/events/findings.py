"""What a finding about a sent message (a parsed bounce, complaint or auto-reply, or the
simulator's) becomes: one event, the recipient's status, and a suppression for hard bounces and
complaints. Credits are never touched: the mail left."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from relay.bounces.parse import Finding, Kind, suppresses

if TYPE_CHECKING:
    from relay.store.store import Store

EVENT_TYPES: dict[Kind, str] = {
    Kind.BOUNCED: "email.bounced",
    Kind.DELAYED: "email.delivery_delayed",
    Kind.COMPLAINED: "email.complained",
    Kind.AUTO_REPLIED: "email.auto_replied",
}


def suppression_reason(finding: Finding) -> str | None:
    """hard_bounce, complaint, or None (not suppressed)."""
    if finding.kind is Kind.COMPLAINED:
        return "complaint"
    return "hard_bounce" if suppresses(finding) else None


def event_data(finding: Finding) -> dict[str, Any]:
    """The event's type-specific data."""
    data: dict[str, Any] = {"source": str(finding.source)}
    if finding.failure_code is not None:
        data["failureCode"] = int(finding.failure_code)
    for key, value in (("status", finding.status), ("diagnostic", finding.diagnostic),
                       ("remoteMta", finding.remote_mta), ("feedbackType", finding.feedback_type)):
        if value:
            data[key] = value
    return data


async def record_finding(store: Store, message_id: uuid.UUID, position: int | None, finding: Finding) -> bool:
    """Record one finding about one recipient (position: its index in the message, from the VERP
    token; else finding.recipient names it, if the message was sent to it). False when the message is
    unknown, the recipient is not one of its recipients, or there is nothing to record."""
    event = EVENT_TYPES.get(finding.kind)
    if event is None:
        return False
    return await store.record_bounce(message_id, position, finding.recipient, event, event_data(finding),
                                     suppression_reason(finding))
