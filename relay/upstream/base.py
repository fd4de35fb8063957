"""What an upstream is to the pipeline: deliver(envelope, data) -> Delivery, never an exception."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Verdict(enum.Enum):
    """How a delivery attempt ended."""

    SENT = "sent"
    PERMANENT = "permanent"  # the upstream refused for good: RELAY_FAILED
    TRANSIENT = "transient"  # 4xx, timeout, unreachable: UPSTREAM_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one delivery attempt, already translated from the library's errors."""

    verdict: Verdict
    reply: str  # the upstream's reply ("250 2.0.0 Ok: queued as X") or what went wrong
    failure_code: int | None = None
    refused: tuple[str, ...] = field(default=())  # recipients refused while others were taken


class Upstream(Protocol):
    """A place accepted mail is handed to."""

    async def deliver(self, mail_from: str, recipients: Sequence[str], data: bytes | bytearray, *,
                      crlf_verified: bool = False, dot_free: bool = False,
                      body_8bit: bool = False, smtputf8: bool = False) -> Delivery:
        """Hand over one message; the result says what happened, errors included.

        crlf_verified: the caller already checked that every line ends in CRLF (no bare CR or LF),
        so the upstream need not check again before sending the data as is.
        dot_free: the caller already checked that no line starts with a dot (nothing to stuff).
        body_8bit: the client declared BODY=8BITMIME (RFC 6152); smtputf8: the message needs
        SMTPUTF8 (RFC 6531). (Passing them on is the SMTP upstream's part.)
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    @property
    def in_use(self) -> int:
        """Connections (or writers) busy right now."""
        ...
