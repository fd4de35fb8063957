"""The [events], [webhooks] and [bounces] config sections (relay/config.py lists them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """Events and the mailbox simulator."""

    simulator_domain: str = "simulator.invalid"  # recipients there are never relayed
    simulator_free: bool = False  # simulator recipients cost nothing (they cost credits by default)


@dataclass(frozen=True, slots=True)
class WebhooksConfig:
    """Delivery of events to the accounts' endpoints."""

    worker: bool = True  # drain the webhook outbox from this instance
    allow_private_targets: bool = False  # loopback/private/link-local targets (development, tests)
    timeout_seconds: float = 15.0
    concurrency: int = 20  # POSTs in flight per instance
    lease_seconds: float = 60.0  # a claimed delivery is another instance's again after this
    poll_seconds: float = 5.0
    disable_after_days: float = 5.0  # an endpoint failing for this long is disabled
    rotation_overlap_hours: float = 24.0  # the previous secret still signs for this long


@dataclass(frozen=True, slots=True)
class BouncesConfig:
    """VERP bounce addresses."""

    domain: str = ""  # set: the envelope sender becomes b+<token>@<domain>
