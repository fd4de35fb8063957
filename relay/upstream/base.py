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


class Extension(enum.Enum):
    """An SMTP extension a message needs and the upstream does not offer: nothing was sent.

    The SMTP channel answers its own client from this, not from Delivery.reply:
    SMTPUTF8 with `553 5.6.7` (RFC 6531 section 3.5: non-ASCII addresses not permitted),
    EIGHTBITMIME with `554 5.6.3` (RFC 3463: conversion required but not supported).
    Both are permanent: the same message to the same upstream would fail the same way.
    """

    SMTPUTF8 = "SMTPUTF8"
    EIGHTBITMIME = "8BITMIME"


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one delivery attempt, already translated from the library's errors."""

    verdict: Verdict
    reply: str  # the upstream's reply ("250 2.0.0 Ok: queued as X") or what went wrong
    failure_code: int | None = None
    refused: tuple[str, ...] = field(default=())  # recipients refused while others were taken
    lacking: Extension | None = None  # PERMANENT because the upstream lacks what the message needs


class Upstream(Protocol):
    """A place accepted mail is handed to."""

    async def deliver(self, mail_from: str, recipients: Sequence[str], data: bytes | bytearray, *,
                      crlf_verified: bool = False, dot_free: bool = False, body_8bit: bool | None = None,
                      smtputf8: bool = False) -> Delivery:
        """Hand over one message; the result says what happened, errors included.

        crlf_verified: the caller already checked that every line ends in CRLF (no bare CR or LF),
        so the upstream need not check again before sending the data as is.
        dot_free: the caller already checked that no line starts with a dot (nothing to stuff).
        body_8bit: True, the message is 8-bit (the client said BODY=8BITMIME); False, the caller
        looked and every byte is ASCII; None (not known, e.g. the queue's stored bodies): an SMTP
        upstream looks itself (about 1 ms per 10 MB), so 8-bit content always goes with BODY=8BITMIME.
        smtputf8: the message needs SMTPUTF8 (RFC 6531; the client said SMTPUTF8, e.g. for UTF-8
        headers). An SMTP upstream also finds this out itself from a non-ASCII envelope address.
        Where the upstream does not offer what the message needs, the Delivery is PERMANENT with
        `lacking` set (see Extension) and nothing is sent.
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    @property
    def in_use(self) -> int:
        """Connections (or writers) busy right now."""
        ...
