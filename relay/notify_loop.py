"""The loop shared by the background workers (the cap queue, the webhook outbox): passes over what
is due, woken by a NOTIFY on a channel (LISTENed on a connection of its own), by wake(), or by the
poll interval, until stop()."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from relay.errors import StoreUnavailable
from relay.store.base import DATABASE_ERRORS
from relay.store.store import Store

log = logging.getLogger(__name__)

_LISTEN_ERRORS: tuple[type[BaseException], ...] = (StoreUnavailable, *DATABASE_ERRORS)


class NotifyLoop:
    """Runs a pass again at once after one that did work; after an idle one, when woken or after
    poll_seconds. gather_seconds: after a busy pass or a wake-up, wait this long before the next
    pass, so that one pass takes the work of many NOTIFYs."""

    def __init__(self, name: str, store: Store, channel: str, poll_seconds: float,
                 gather_seconds: float = 0.0) -> None:
        self.name = name  # in log lines: "queue worker", "webhook worker"
        self.store = store
        self.channel = channel
        self.poll_seconds = poll_seconds
        self.gather_seconds = gather_seconds
        self._wake = asyncio.Event()
        self._stopping = False

    @property
    def stopping(self) -> bool:
        """stop() was called: start no new work."""
        return self._stopping

    def wake(self) -> None:
        """Run a pass now (or right after the one under way)."""
        self._wake.set()

    def stop(self) -> None:
        """Let run() return after the pass under way."""
        self._stopping = True
        self._wake.set()

    def _on_notify(self, *_: object) -> None:
        self.wake()

    async def run(self, one_pass: Callable[[], Awaitable[bool]]) -> None:
        """Until stop(): one_pass() (True: it did work), then wait to be woken or for the poll interval."""
        listener: asyncpg.Connection | None = None
        try:
            while not self._stopping:
                if listener is None or listener.is_closed():
                    listener = await self._listen()
                # cleared before the pass, not after: a NOTIFY or stop() during the pass, after its
                # last look for work, must end the wait below at once, not a poll interval later
                self._wake.clear()
                if self._stopping:  # stop() came while the LISTEN was being set up: its wake-up is gone
                    break
                try:
                    if await one_pass():
                        await asyncio.sleep(self.gather_seconds)
                        continue
                except StoreUnavailable:
                    log.warning("%s: database trouble, will retry", self.name, exc_info=True)
                except Exception:
                    # a bug must not stop the work for good: try again later
                    log.exception("%s: unexpected error, will retry", self.name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                    await asyncio.sleep(self.gather_seconds)
        finally:
            if listener is not None:
                # the listening connection is the loop's own: closing it ends the LISTEN, and
                # nothing that fails here can keep a pool connection from going back
                with contextlib.suppress(Exception):
                    await listener.close()

    async def _listen(self) -> asyncpg.Connection | None:
        """A connection of its own (LISTEN is session state, never a pool's); None: poll only."""
        try:
            return await self.store.listen(self.channel, self._on_notify)
        except _LISTEN_ERRORS:
            log.warning("%s: cannot LISTEN, polling only", self.name, exc_info=True)
            return None
