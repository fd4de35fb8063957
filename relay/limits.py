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
    """One credential check in progress: wait this long first; report how it ended."""

    wait: float
    throttle: AuthThrottle
    ip: str
    settled: bool = False

    def succeeded(self) -> None:
        """The credentials were good (or the check could not be made): the attempt costs nothing."""
        if not self.settled:
            self.settled = True
            self.throttle._forget_one(self.ip)

    def failed(self) -> None:
        """The credentials were wrong: the attempt stays counted."""
        self.settled = True


class AuthThrottle:
    """Failed credential checks per client address across connections: slow down, then refuse.

    An attempt is counted when it starts and forgiven only when it succeeds, so N guesses sent in
    parallel cost what N serial ones cost; at most CONCURRENT_CHECKS of one address run at once.
    """

    def __init__(self, delay_after: int, refuse_after: int, window: float = 900.0,
                 max_tracked: int = 100_000) -> None:
        self.delay_after = delay_after
        self.refuse_after = refuse_after
        self.window = window
        self.max_tracked = max_tracked
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()
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
        if n >= self.refuse_after:
            return None
        if n >= self.delay_after:
            return min(2.0 ** (n - self.delay_after), 8.0)
        return 0.0

    def _count(self, ip: str) -> None:
        times = self._attempts.pop(ip, None) or deque()
        times.append(time.monotonic())
        self._attempts[ip] = times
        while len(self._attempts) > self.max_tracked:
            self._attempts.popitem(last=False)

    def _forget_one(self, ip: str) -> None:
        times = self._attempts.get(ip)
        if times:
            times.pop()
            if not times:
                del self._attempts[ip]

    def failed(self, ip: str) -> None:
        """Record a failed check made outside attempt()."""
        self._count(ip)

    @contextlib.asynccontextmanager
    async def attempt(self, ip: str) -> AsyncIterator[Attempt | None]:
        """A counted check (None: refused, over the limit). Unless the caller reports success,
        the attempt stays counted as a failure."""
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
                self._count(ip)
                attempt = Attempt(wait, self, ip)
                try:
                    if wait:
                        await asyncio.sleep(wait)
                    yield attempt
                except BaseException:
                    attempt.succeeded()  # cut short (client gone, shutdown): not a guess
                    raise
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
