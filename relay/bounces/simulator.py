"""The mailbox simulator: what happens to a recipient at the reserved simulator domain."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from relay.bounces.parse import Finding, Kind, Source
from relay.upstream.classify import FailureCode

DEFAULT_DOMAIN = "simulator.invalid"


class Outcome(enum.StrEnum):
    """What the simulator does with one recipient instead of relaying it."""

    DELIVERED = "delivered"
    BOUNCE = "bounce"
    OOTO = "ooto"
    COMPLAINT = "complaint"
    SUPPRESSED = "suppressed"


@dataclass(frozen=True, slots=True)
class Simulated:
    """The simulated fate of one recipient.

    `finding` is what a real mailbox would have sent back, fed to the same code as a parsed
    bounce (so the same suppression rule, `parse.suppresses`, applies).
    """

    outcome: Outcome
    finding: Finding | None


_SUPPRESSED_LOCAL_PARTS = ("suppressed", "suppressionlist")


def is_simulator_address(recipient: str, domain: str = DEFAULT_DOMAIN) -> bool:
    """True for an address at the simulator domain (such recipients are never relayed)."""
    _, at, addr_domain = recipient.strip().strip("<>").rpartition("@")
    return bool(at) and addr_domain.rstrip(".").lower() == domain.rstrip(".").lower()


def simulate(recipient: str, domain: str = DEFAULT_DOMAIN) -> Simulated | None:
    """The simulated outcome for a recipient; None when it is not a simulator address.

    The local part picks the outcome, before any "+label" (bounce+signup@ is a bounce), so an
    app can tell its test messages apart. An unknown local part bounces as "no such user",
    which is what a real domain would answer.
    """
    if not is_simulator_address(recipient, domain):
        return None
    address = recipient.strip().strip("<>")
    local = address.rpartition("@")[0].split("+", 1)[0].lower()
    if local in ("delivered", "success"):
        return Simulated(Outcome.DELIVERED, None)
    if local in _SUPPRESSED_LOCAL_PARTS:
        return Simulated(Outcome.SUPPRESSED, None)
    if local == "ooto":
        outcome, finding = Outcome.OOTO, Finding(
            Kind.AUTO_REPLIED, Source.AUTO_REPLY, FailureCode.AUTO_REPLY, recipient=address,
            diagnostic="simulated out-of-office reply")
    elif local == "complaint":
        outcome, finding = Outcome.COMPLAINT, Finding(
            Kind.COMPLAINED, Source.ARF, recipient=address, feedback_type="abuse")
    else:
        why = "simulated bounce" if local == "bounce" else "not a simulator mailbox"
        outcome, finding = Outcome.BOUNCE, Finding(
            Kind.BOUNCED, Source.DSN, FailureCode.NO_SUCH_USER, recipient=address, status="5.1.1",
            diagnostic=f"smtp; 550 5.1.1 <{address}>: {why}: no such user")
    return Simulated(outcome, finding)
