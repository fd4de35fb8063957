"""The mailbox simulator in the send path: which recipients are simulated, what they cost, and
the events a real mailbox would have caused (relay/bounces/simulator.py decides each one's fate)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from relay.bounces import simulator
from relay.events.config import EventsConfig
from relay.events.findings import record_finding

if TYPE_CHECKING:
    from relay.store.store import Store

log = logging.getLogger(__name__)


class Simulator:
    """Recipients at events.simulator_domain: never relayed, charged unless events.simulator_free."""

    REPLY = "250 2.0.0 accepted by the mailbox simulator (not relayed)"

    def __init__(self, cfg: EventsConfig) -> None:
        self.domain = cfg.simulator_domain
        self.free = cfg.simulator_free

    def recipients(self, recipients: Sequence[str]) -> tuple[str, ...]:
        """The simulated ones among recipients."""
        if not self.domain:
            return ()
        return tuple(r for r in recipients if simulator.is_simulator_address(r, self.domain))

    def suppresses(self, address: str) -> bool:
        """A simulator address that behaves as if on the suppression list (suppressed@)."""
        fate = simulator.simulate(address, self.domain) if self.domain else None
        return fate is not None and fate.outcome is simulator.Outcome.SUPPRESSED

    async def after_delivery(self, store: Store, message_id: uuid.UUID, recipients: Sequence[str],
                             simulated: Sequence[str]) -> None:
        """What each simulated mailbox 'sends back' once the message is sent: a bounce, an
        auto-reply, a complaint (delivered@ has its email.sent already), recorded as a real one is."""
        for address in simulated:
            fate = simulator.simulate(address, self.domain)
            if fate is None or fate.finding is None:
                continue
            try:
                await record_finding(store, message_id, list(recipients).index(address), fate.finding)
            except Exception:  # the send is recorded; a lost synthetic event must not fail it
                log.exception("simulator: could not record %s for %s", fate.outcome, message_id)
