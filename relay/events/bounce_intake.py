"""Bounces, complaints and auto-replies arriving at b+<token>@<bounces domain> on the inbound
listener: tied to message and recipient by the VERP token, parsed (relay/bounces/parse.py), recorded
as events (relay/events/findings.py). Always answered 250: a bounce never causes a bounce."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from prometheus_client import Counter

from relay.bounces import parse, token
from relay.errors import StoreUnavailable
from relay.events.findings import record_finding
from relay.inbound.payload import Envelope
from relay.inbound.replies import Severity, Verdict
from relay.store.store import Store

if TYPE_CHECKING:
    from relay.channels.base import ServerContext

log = logging.getLogger(__name__)

BOUNCES = Counter("relay_bounce_messages_total", "Messages received at bounce addresses, by what came of them",
                  ["result"])  # recorded, nothing (a delivered DSN), untied (no valid token), unparseable, error
ACCEPTED = Verdict("250 2.0.0 OK", Severity.DELIVERED, 0, "bounce processed")
WHOLE_MESSAGE = token.MAX_RECIPIENT_INDEX  # the token of a message relayed to several recipients at once


def envelope_sender(message_id: uuid.UUID, position: int | None, secret: bytes, domain: str) -> str:
    """The VERP envelope sender: names the recipient at position, or the whole message (None)."""
    return token.make(message_id, WHOLE_MESSAGE if position is None else position, secret, domain)


class BounceClaimant:
    """The inbound listener's claimant for the bounce domain (relay/inbound/claims.py)."""

    name = "bounces"

    def __init__(self, store: Store, secret: bytes, domain: str) -> None:
        self.store = store
        self.secret = secret
        self.domain = domain.lower().rstrip(".")

    def claims(self, address: str) -> bool:
        """Every address at the bounce domain: a forged or garbled one is accepted and dropped."""
        return address.rpartition("@")[2].lower().rstrip(".") == self.domain

    async def receive(self, data: bytes, envelope: Envelope) -> Verdict:
        """Record what the message says; 250 whatever happens (never a bounce of a bounce)."""
        # the token first: without an authenticated one nothing is attributed (docs/events.md:
        # forged bounces), so a message to forged addresses is never parsed
        tied = [(recipient, token.parse(recipient, self.domain, self.secret)) for recipient in envelope.recipients]
        findings: list[parse.Finding] | None = None
        for recipient, found in tied:
            try:
                if found is None:
                    result = "untied"
                else:
                    if findings is None:  # once per message, off the loop: a large MIME tree takes a while
                        findings = await asyncio.to_thread(parse.parse, data)
                    result = await self._take(findings, *found)
                BOUNCES.labels(result).inc()
            except StoreUnavailable:
                # the sender retries a 451; nothing was recorded (relay_bounce is one transaction)
                log.warning("bounce for %s not recorded: database unavailable", recipient, exc_info=True)
                return Verdict("451 4.3.0 temporary failure, try again later", Severity.DEFERRED, 0, "database")
            except Exception:  # a parser or data surprise: accepted and counted, never bounced back
                log.exception("bounce for %s could not be processed", recipient)
                BOUNCES.labels("error").inc()
        return ACCEPTED

    async def _take(self, findings: list[parse.Finding], message_id: uuid.UUID, index: int) -> str:
        if findings and all(f.kind is parse.Kind.UNPARSEABLE for f in findings):
            return "unparseable"
        position = None if index == WHOLE_MESSAGE else index
        recorded = False
        for finding in findings:
            if finding.kind is parse.Kind.UNPARSEABLE:
                continue
            if position is None and finding.recipient is None:
                continue  # a whole-message token and no recipient named: nobody to attribute it to
            recorded = await record_finding(self.store, message_id, position, finding) or recorded
        return "recorded" if recorded else "nothing"


def claimant(ctx: ServerContext) -> BounceClaimant | None:
    """The inbound listener's factory: a claimant when [bounces] domain is set."""
    domain = ctx.cfg.bounces.domain
    return BounceClaimant(ctx.store, ctx.key_secret, domain) if domain else None
