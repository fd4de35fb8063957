"""Per-instance leases of rate-limit calls: most calls are counted in memory, not in a round trip.

A key's rolling minute lives in PostgreSQL (rate_windows, relay_lease), shared by every instance.
An instance that sees a key busy asks relay_lease for several calls of the current second at once
and spends them in memory until that second ends; the window counted them all when it granted
them, so the limit across instances is never exceeded. What a lease did not spend is given back in
the key's next lease call (or by sweep(), for a key gone quiet), so the window over-counts an
instance's unspent calls for at most about a second. A lease starts at one call (a quiet key asks
the database every time, as without leases), doubles while leases run out within their second,
and near the limit relay_lease grants at most half of what is left.

What a leased call does not re-read: the balance (it carries the lease's reading less a recipient's
price per call since, and asks the database again below the price, so a top-up is never missed) and
the key's enabled flag (relay_admit checks it again, so a key disabled meanwhile sends nothing).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from relay.domain import OpenResult
from relay.store.store import Store


@dataclass(slots=True)
class _Lease:
    """Calls of one database second held by this instance for one key."""

    second: int
    left: int  # calls not yet spent
    size: int  # calls granted
    expires: float  # monotonic time the second ends (measured from before the request was sent)
    credits: int  # the balance when granted, less a recipient's price per call spent since


class RateLeases:
    """The leases of one instance, per key; open() is the rate-limit call of the pipeline."""

    def __init__(self, store: Store, *, default_limit: int, max_lease: int, price: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.default_limit = default_limit
        self.max_lease = max(1, max_lease)
        self.price = price  # a recipient's price: what a call spends of the balance at least
        self.clock = clock
        self._leases: dict[str, _Lease] = {}
        self._want: dict[str, int] = {}
        self._asking: dict[str, asyncio.Future[None]] = {}

    async def open(self, key_id: str) -> OpenResult:
        """Count one call of key_id: from its lease when one is held and usable, else in the
        database (asking for a lease when the key is busy). Raises what the store raises."""
        while True:
            lease = self._leases.get(key_id)
            if lease is not None and lease.left > 0 and self.clock() < lease.expires and lease.credits >= self.price:
                lease.left -= 1
                credits = lease.credits
                lease.credits -= self.price
                return OpenResult(0.0, True, credits)
            asking = self._asking.get(key_id)
            if asking is None:
                return await self._ask(key_id, lease)
            await asyncio.shield(asking)  # one request per key at a time; then try its lease

    async def _ask(self, key_id: str, old: _Lease | None) -> OpenResult:
        """One relay_lease call for key_id, giving back what old did not spend."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._asking[key_id] = done
        want = self._next_want(key_id, old)
        back_second, back = (old.second, old.left) if old is not None and old.left > 0 else (None, 0)
        self._leases.pop(key_id, None)  # given back (or lost with an error: over-counting only)
        sent = self.clock()
        try:
            opened = await self.store.open_call(key_id, self.default_limit, want=want,
                                                back_second=back_second, back=back)
            if opened.retry_after <= 0 and opened.enabled:
                # kept even when spent (a lease of one): its end tells the next call to ask for more
                self._leases[key_id] = _Lease(opened.second, opened.granted - 1, opened.granted,
                                              sent + opened.seconds_left, opened.credits - self.price)
            return opened
        finally:
            del self._asking[key_id]
            done.set_result(None)

    def _next_want(self, key_id: str, old: _Lease | None) -> int:
        """Double while leases are spent within their second; otherwise what the last one used."""
        want = self._want.get(key_id, 1)
        if old is not None:
            spent_in_time = old.left == 0 and self.clock() < old.expires
            want = min(self.max_lease, want * 2) if spent_in_time else max(1, old.size - old.left)
        self._want[key_id] = want
        return want

    async def sweep(self, *, everything: bool = False) -> int:
        """Give back the unspent calls of leases whose second has ended (keys gone quiet; every
        lease when everything, at shutdown); the number of calls given back. Run about once a second."""
        now = self.clock()
        given = 0
        for key_id, lease in list(self._leases.items()):
            if (lease.expires > now and not everything) or key_id in self._asking:
                continue
            del self._leases[key_id]
            self._want.pop(key_id, None)
            if lease.left > 0:
                await self.store.give_back_calls(key_id, lease.second, lease.left)
                given += lease.left
        return given
