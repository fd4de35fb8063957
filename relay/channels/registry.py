"""The one list of channels a server is assembled from; a new listener is one line here."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from relay.channels import dashboard, http, inbound, smtp
from relay.channels.base import Channel, ServerContext

ChannelFactory = Callable[[ServerContext], Sequence[Channel]]

# Each factory reads its own config section and returns the channels it enables (maybe none).
FACTORIES: tuple[ChannelFactory, ...] = (
    smtp.channels,
    http.channels,
    inbound.channels,
    dashboard.channels,
)


def build(ctx: ServerContext) -> list[Channel]:
    """Every enabled channel, in start order."""
    return [channel for factory in FACTORIES for channel in factory(ctx)]
