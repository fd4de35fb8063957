"""Recipients taken ahead of the routes: the hook for mail the relay reads itself (bounces).

A claimant is asked first, at RCPT TO, whether it takes an address (`claims`); the recipients it takes
never reach a route, and after DATA it gets the message (`receive`) and answers with a Verdict that
joins the routes' (the DATA reply is the worst of all). Issue 13's bounce processor is one: it claims
`b+<token>@<bounces domain>` and turns what arrives into events. To add one, write a factory
`(ServerContext) -> Claimant | None` and list it in FACTORIES (None: not configured, e.g. no
`[bounces] domain`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from relay.events import bounce_intake
from relay.inbound.payload import Envelope
from relay.inbound.replies import Verdict

if TYPE_CHECKING:
    from relay.channels.base import ServerContext


class Claimant(Protocol):
    """Something that takes some recipients of the inbound listener for itself."""

    name: str

    def claims(self, address: str) -> bool:
        """Does this recipient belong to me? (called at RCPT TO; keep it free of I/O)"""
        ...

    async def receive(self, data: bytes, envelope: Envelope) -> Verdict:
        """The message for my recipients (envelope.recipients); the verdict becomes part of the DATA
        reply (a 250 Verdict for anything accepted, even when it is dropped)."""
        ...


ClaimantFactory = Callable[["ServerContext"], "Claimant | None"]

# The claimants of the inbound listener, asked in this order before any route.
FACTORIES: tuple[ClaimantFactory, ...] = (bounce_intake.claimant,)


def build(ctx: ServerContext, factories: Sequence[ClaimantFactory] = FACTORIES) -> list[Claimant]:
    """Every configured claimant."""
    return [claimant for factory in factories if (claimant := factory(ctx)) is not None]
