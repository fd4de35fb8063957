"""Per-client-address limits every listener shares: failed-credential throttling and open connections.

Both are per process (like Postfix's anvil per host): behind several instances each one counts
its own clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

# How many credential checks of one address may be in flight at once: the rest wait their turn,
# so a burst of parallel guesses is judged one verdict after another, as serial guesses are.
CONCURRENT_CHECKS = 4


@dataclass(slots=True)
class Attempt:
    """One credential check in progress; the caller reports a failure (wrong credentials)."""

    wrong: bool = False

    def failed(self) -> None:
        """The credentials were wrong: counts as a failure of this address."""
        self.wrong = True


class AuthThrottle:
    """Failed credential checks per client address across connections: slow down, then refuse.

    A check in progress counts towards the refusal as if it had failed, and at most
    CONCURRENT_CHECKS of one address run at once: N guesses sent in parallel are refused where N
    serial ones would be (a verdict is never taken while an earlier guess is still unjudged
    beyond that many). Good credentials cost nothing.
    """

    def __init__(self, delay_after: int, refuse_after: int, window: float = 900.0,
                 max_tracked: int = 100_000) -> None:
        self.delay_after = delay_after
        self.refuse_after = refuse_after
        self.window = window
        self.max_tracked = max_tracked
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()  # failures per address
        self._pending: dict[str, int] = {}  # checks in progress per address
        self._slots: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}  # ip -> (slot, [users])

    def _recent(self, ip: str) -> deque[float]:
        times = self._attempts.get(ip)
        if times is None:
            return deque()
        cutoff = time.monotonic() - self.window
        while times and times[0] < cutoff:
            times.popleft()
        return times

    def verdict(self, ip: str) -> float | None:
        """Seconds to wait before checking this address's credentials, or None to refuse them."""
        n = len(self._recent(ip))
        if n + self._pending.get(ip, 0) >= self.refuse_after:
            return None
        if n >= self.delay_after:
            return min(2.0 ** (n - self.delay_after), 8.0)
        return 0.0

    def failed(self, ip: str) -> None:
        """Record a failed check."""
        times = self._attempts.pop(ip, None) or deque()
        times.append(time.monotonic())
        self._attempts[ip] = times
        while len(self._attempts) > self.max_tracked:
            self._attempts.popitem(last=False)

    @contextlib.asynccontextmanager
    async def attempt(self, ip: str) -> AsyncIterator[Attempt | None]:
        """A check of this address's credentials, after the throttle's delay (None: refused)."""
        entry = self._slots.get(ip)
        if entry is None:
            entry = self._slots[ip] = (asyncio.Semaphore(CONCURRENT_CHECKS), [0])
        slot, users = entry
        users[0] += 1
        try:
            async with slot:
                wait = self.verdict(ip)
                if wait is None:
                    yield None
                    return
                self._pending[ip] = self._pending.get(ip, 0) + 1
                attempt = Attempt()
                try:
                    if wait:
                        await asyncio.sleep(wait)
                    yield attempt
                finally:
                    left = self._pending[ip] - 1
                    if left:
                        self._pending[ip] = left
                    else:
                        del self._pending[ip]
                    if attempt.wrong:
                        self.failed(ip)
        finally:
            users[0] -= 1
            if not users[0]:
                self._slots.pop(ip, None)


class ConnectionLimit:
    """Open connections per client address (0: no limit)."""

    def __init__(self, per_address: int) -> None:
        self.per_address = per_address
        self._open: dict[str, int] = {}

    def acquire(self, ip: str) -> bool:
        """Count a new connection; False (and not counted) when the address already has its share."""
        n = self._open.get(ip, 0)
        if self.per_address and n >= self.per_address:
            return False
        self._open[ip] = n + 1
        return True

    def release(self, ip: str) -> None:
        """A counted connection ended."""
        n = self._open.get(ip, 0) - 1
        if n > 0:
            self._open[ip] = n
        else:
            self._open.pop(ip, None)

    def count(self, ip: str) -> int:
        """Open connections of ip."""
        return self._open.get(ip, 0)
