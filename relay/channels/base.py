"""What a channel is to the server: something that listens, and stops with a grace period."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from relay.config import Config
    from relay.limits import AuthThrottle
    from relay.pipeline import Pipeline
    from relay.store.store import Store


class Endpoint(NamedTuple):
    """One bound listening socket: the listener's name ('smtp', 'smtps', 'http', ...), host, port."""

    name: str
    host: str
    port: int


class Channel(Protocol):
    """A listener (or a group of listeners sharing state) that the server starts and stops."""

    name: str

    async def start(self) -> None:
        """Bind and start serving; raise ListenError naming the config key when that fails."""
        ...

    async def stop(self, grace: float) -> None:
        """Stop accepting, let work in progress finish for up to grace seconds, close the rest."""
        ...

    @property
    def listening(self) -> list[Endpoint]:
        """Where it listens (after start)."""
        ...


@dataclass
class ServerContext:
    """What a channel may be built from: the config and the shared parts of one server."""

    cfg: Config
    store: Store
    pipeline: Pipeline
    key_secret: bytes
    clock: Callable[[], datetime]
    auth_throttle: AuthThrottle | None = None  # failed credentials per address, shared by every listener
