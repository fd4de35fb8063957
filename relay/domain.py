"""Plain types shared by the store, the pipeline and the channels (no I/O, no imports of either)."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime


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
    # the account's suppression list as loaded with the key (address -> reason), for SMTP's RCPT TO;
    # relay_admit checks the list again, so one added since is still skipped and not charged
    suppressed: Mapping[str, str] = field(default_factory=dict)


class AdmitStatus(enum.StrEnum):
    """What relay_admit decided for one message."""

    SENDING = "sending"  # debited, not capped: relay it now
    QUEUED = "queued"  # debited, over the daily cap: store it for the queue
    INSUFFICIENT_CREDITS = "INSUFFICIENT_CREDITS"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    IDEMPOTENCY_MISMATCH = "IDEMPOTENCY_MISMATCH"
    IDEMPOTENCY_IN_FLIGHT = "IDEMPOTENCY_IN_FLIGHT"
    REPLAY = "REPLAY"  # the key was used before for the same message: answer as then
    SUPPRESSED = "suppressed"  # every recipient is on the suppression list: nothing sent or charged
    KEY_DISABLED = "KEY_DISABLED"  # disabled after its call was counted (a leased call, rate_lease.py)


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer of relay_admit; for a replay, the original message, its outcome name and reply."""

    status: AdmitStatus
    original_id: uuid.UUID | None = None
    original_reply: str | None = None
    replayed_outcome: str | None = None  # an Outcome's value, for REPLAY
    charged: int = 0  # credits debited (recipients neither suppressed nor free)
    suppressed: tuple[tuple[str, str], ...] = ()  # (address, reason) of each recipient skipped

    @classmethod
    def from_sql(cls, status: str, original_id: uuid.UUID | None, original_reply: str | None,
                 charged: int = 0, suppressed: Sequence[str] | None = None,
                 reasons: Sequence[str] | None = None) -> Admission:
        """Decode relay_admit's text status ('REPLAY:<outcome>' carries the original outcome)."""
        if status.startswith("REPLAY:"):
            return cls(AdmitStatus.REPLAY, original_id, original_reply, status.removeprefix("REPLAY:"))
        skipped = tuple(zip(suppressed or (), reasons or (), strict=True))
        return cls(AdmitStatus(status), original_id, original_reply, None, charged, skipped)


@dataclass(frozen=True, slots=True)
class Extras:
    """What a message carries besides its envelope, stored on its row: tags ({name: value} as JSON),
    metadata (a JSON object as text) and a scheduled delivery time."""

    tags: str | None = None
    metadata: str | None = None
    send_at: datetime | None = None


NO_EXTRAS = Extras()


@dataclass(frozen=True, slots=True)
class OpenResult:
    """The answer of relay_lease: wait this long (0: go), key still enabled, balance; and the
    calls granted (a lease: relay/rate_lease.py), of which database second, and how much of that
    second was left when it was read."""

    retry_after: float
    enabled: bool
    credits: int
    granted: int = 1
    second: int = 0
    seconds_left: float = 0.0


@dataclass(frozen=True, slots=True)
class QueuedItem:
    """A claimed queued message: what delivery needs and what the retry rules look at."""

    message_id: uuid.UUID
    account_id: int
    mail_from: str
    recipients: list[str]
    data: bytes
    credits_charged: int
    attempts: int
    deferrals: int
    created_at: datetime
    scheduled_at: datetime | None = None  # a scheduled send: its 24-hour promise starts here
