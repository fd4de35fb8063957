"""The outcomes the send pipeline decides, and the result it hands back to a channel."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    """Every way a submission can end (docs/contract.md, 'The pipeline, in order')."""

    SENT = "SENT"
    QUEUED = "QUEUED"
    KEY_MISSING = "KEY_MISSING"
    KEY_INVALID = "KEY_INVALID"
    KEY_DISABLED = "KEY_DISABLED"
    RATE_LIMITED = "RATE_LIMITED"
    INVALID = "INVALID"
    TOO_LARGE = "TOO_LARGE"
    INSUFFICIENT_CREDITS = "INSUFFICIENT_CREDITS"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    RELAY_FAILED = "RELAY_FAILED"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    TEMPORARY = "TEMPORARY"
    # issue 4: a repeated Idempotency-Key with another payload, or while the first is in flight
    IDEMPOTENCY_MISMATCH = "IDEMPOTENCY_MISMATCH"
    IDEMPOTENCY_IN_FLIGHT = "IDEMPOTENCY_IN_FLIGHT"
    # issue 13: every recipient is on the suppression list; logged, nothing sent or charged
    SUPPRESSED = "SUPPRESSED"
    # issue 18: send_at given; charged and stored, the queue delivers it at that time
    SCHEDULED = "SCHEDULED"

    @property
    def accepted(self) -> bool:
        """True when the message was taken (charged, or every recipient suppressed)."""
        return self in (Outcome.SENT, Outcome.QUEUED, Outcome.SUPPRESSED, Outcome.SCHEDULED)


@dataclass(frozen=True, slots=True)
class Result:
    """What the pipeline decided: the outcome plus what a channel needs to word it."""

    outcome: Outcome
    message_id: str | None = None
    reason: str = ""  # human text for INVALID and friends; never internal error text
    retry_after: int | None = None  # seconds, for RATE_LIMITED and transient outcomes
    enhanced: str | None = None  # an RFC 3463 code when the reason has a more precise one
    failure_code: int | None = None
    upstream_reply: str | None = None
    replayed: bool = False  # the original outcome of an earlier submission with the same idempotency key
    suppressed: tuple[str, ...] = ()  # recipients skipped because they are on the suppression list


def reject(outcome: Outcome, reason: str = "", *, enhanced: str | None = None,
           retry_after: int | None = None) -> Result:
    """Shorthand for a result that sent nothing."""
    return Result(outcome, reason=reason, enhanced=enhanced, retry_after=retry_after)
