"""Rate-limit leases (relay/rate_lease.py): a busy key's calls are counted a lease at a time, the
limit holds exactly across instances, unspent calls go back, and neither a top-up nor disabling a
key is missed while a lease is held. Real PostgreSQL; two Stores stand for two instances."""

from __future__ import annotations

import asyncio
import uuid

from relay import keys
from relay.domain import OpenResult
from relay.rate_lease import RateLeases
from relay.store.store import Store
from tests.conftest import KEY_SECRET, eventually, relay_config, start_relay
from tests.smtp_helpers import Raw, message


async def _key(store: Store, credits: int = 100, rate: int | None = None) -> tuple[int, str]:
    account = await store.create_account(f"acct-{uuid.uuid4().hex[:8]}", credits)
    key_id = keys.new_key_id()
    await store.create_key(key_id, account.id, keys.digest(KEY_SECRET, keys.new_secret()), "test", rate)
    return account.id, key_id


async def _window(store: Store, key_id: str) -> int:
    """Calls the shared window counts for the key now."""
    async with store.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT coalesce((SELECT sum(c) FROM rate_windows w, unnest(w.counts) c "
                                       "WHERE w.key_id = $1), 0)", key_id))


class CountingStore:
    """The real store, with its relay_lease round trips counted (what a lease saves)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls = 0

    async def open_call(self, key_id: str, default_limit: int, **lease: int | None) -> OpenResult:
        self.calls += 1
        return await self.store.open_call(key_id, default_limit, **lease)  # type: ignore[arg-type]

    async def give_back_calls(self, key_id: str, second: int, calls: int) -> None:
        await self.store.give_back_calls(key_id, second, calls)


def _frozen() -> float:
    return 0.0  # a clock under which no lease ever ends: the test decides when a lease is stale


async def test_a_busy_key_needs_few_round_trips_and_a_quiet_one_asks_every_time(store: Store) -> None:
    _, key_id = await _key(store)
    counting = CountingStore(store)
    leases = RateLeases(counting, default_limit=10_000, max_lease=32, price=1, clock=_frozen)  # type: ignore[arg-type]
    first = await leases.open(key_id)
    assert (first.retry_after, first.enabled, first.credits) == (0.0, True, 100)
    assert await _window(store, key_id) == 1  # a first call takes one, as without leases
    for _ in range(199):
        assert (await leases.open(key_id)).retry_after == 0
    # leases of 1, 2, 4 ... 32: 200 calls in 11 round trips instead of 200
    assert counting.calls == 11
    assert await leases.sweep(everything=True) > 0
    assert await _window(store, key_id) == 200  # what was not spent went back

    quiet = RateLeases(counting, default_limit=10_000, max_lease=32, price=1)  # type: ignore[arg-type]
    _, other = await _key(store)
    before = counting.calls
    for _ in range(3):
        await quiet.open(other)
        quiet._leases[other].expires = 0.0  # its second ended before the next call
    assert counting.calls - before == 3 and await _window(store, other) == 3


async def test_the_limit_holds_exactly_across_two_instances(db_dsn: str, store: Store) -> None:
    _, key_id = await _key(store, rate=50)
    second = await Store.connect(db_dsn, max_size=5)
    try:
        a = RateLeases(store, default_limit=120, max_lease=32, price=1)
        b = RateLeases(second, default_limit=120, max_lease=32, price=1)
        results = await asyncio.gather(*(leases.open(key_id) for _ in range(60) for leases in (a, b)))
        # a lease never takes more than the window has room for: never above the limit ...
        admitted = sum(1 for r in results if r.retry_after == 0)
        assert 0 < admitted <= 50
        await a.sweep(everything=True)
        await b.sweep(everything=True)
        # ... and once the unspent calls are back, the window counts exactly the calls let through
        assert await _window(store, key_id) == admitted
        # what is left of the limit is still there for whoever asks next
        more = [await a.open(key_id) for _ in range(50 - admitted)]
        assert all(r.retry_after == 0 for r in more)
        assert (await b.open(key_id)).retry_after > 0
    finally:
        await second.close()


async def test_a_lease_is_not_held_against_a_key_near_its_limit(store: Store) -> None:
    """Near the limit relay_lease grants at most half of what is left: another instance still gets calls."""
    _, key_id = await _key(store, rate=6)
    a = RateLeases(store, default_limit=120, max_lease=32, price=1, clock=_frozen)
    b = RateLeases(store, default_limit=120, max_lease=32, price=1, clock=_frozen)
    for _ in range(4):
        assert (await a.open(key_id)).retry_after == 0  # leases of 1, 2, then 1 (not 4) of the 3 left
    assert await _window(store, key_id) == 4
    assert (await b.open(key_id)).retry_after == 0


async def test_a_top_up_is_seen_while_a_lease_is_held(store: Store) -> None:
    account_id, key_id = await _key(store, credits=1)
    leases = RateLeases(store, default_limit=10_000, max_lease=32, price=1, clock=_frozen)
    assert (await leases.open(key_id)).credits == 1
    assert (await leases.open(key_id)).credits == 1  # a lease of 2: one call left, 0 credits to show
    assert leases._leases[key_id].left == 1
    await store.add_credits(account_id, 10)
    # the lease's balance is below a recipient's price, so this call reads the balance again
    assert (await leases.open(key_id)).credits == 11


async def test_a_key_disabled_while_its_lease_is_held_sends_nothing(relay) -> None:
    """The call comes from the lease, so MAIL FROM passes; the admit re-checks the key: 535 at DATA,
    nothing relayed or charged."""
    t = await relay.tenant(credits=10)
    relay.server.pipeline.leases.clock = _frozen
    raw = await Raw.open(relay.port)
    try:
        assert (await raw.auth(t.key)).startswith("235")
        for _ in range(2):  # leases of 1, then 2: one call left in memory
            assert (await raw.cmd(f"MAIL FROM:<{t.sender}>")).startswith("250")
            assert (await raw.cmd("RCPT TO:<a@dest.test>")).startswith("250")
            assert (await raw.cmd("DATA")).startswith("354")
            assert (await raw.cmd(message(t.sender) + b".\r\n")).startswith("250")
        assert relay.server.pipeline.leases._leases[t.key_id].left == 1
        await relay.store.set_key_enabled(t.key_id, False)
        assert (await raw.cmd(f"MAIL FROM:<{t.sender}>")).startswith("250")  # from the lease
        assert (await raw.cmd("RCPT TO:<a@dest.test>")).startswith("250")
        assert (await raw.cmd("DATA")).startswith("354")
        reply = await raw.cmd(message(t.sender) + b".\r\n")
        assert reply.startswith("535") and "disabled" in reply
    finally:
        raw.close()
    assert len(relay.peer.messages) == 2 and await relay.balance(t) == 8
    assert [r["status"] for r in await relay.store.logs()] == ["sent", "sent"]


async def _two_sends(live, t) -> None:
    """Two messages on one connection: leases of one, then two, so one call is left unspent."""
    raw = await Raw.open(live.port)
    try:
        assert (await raw.auth(t.key)).startswith("235")
        for _ in range(2):
            assert (await raw.cmd(f"MAIL FROM:<{t.sender}>")).startswith("250")
            assert (await raw.cmd("RCPT TO:<a@dest.test>")).startswith("250")
            assert (await raw.cmd("DATA")).startswith("354")
            assert (await raw.cmd(message(t.sender) + b".\r\n")).startswith("250")
    finally:
        raw.close()


async def test_a_quiet_keys_unspent_calls_go_back_within_seconds(relay) -> None:
    """The server's give-back loop returns what a lease did not spend once its second is over."""
    t = await relay.tenant(credits=10)
    frozen = True
    relay.server.pipeline.leases.clock = lambda: 0.0 if frozen else 1e9
    await _two_sends(relay, t)
    assert await _window(relay.store, t.key_id) == 3  # a call, then a lease of 2 with one left
    frozen = False  # every lease's second is over now

    async def given_back() -> bool:
        return await _window(relay.store, t.key_id) == 2

    await eventually(given_back, timeout=5, what="the unspent call given back")


async def test_unspent_calls_go_back_at_shutdown(db_dsn, store, peer) -> None:
    live = await start_relay(relay_config(db_dsn, peer.url), store, peer)
    t = await live.tenant(credits=10)
    live.server.pipeline.leases.clock = _frozen
    try:
        await _two_sends(live, t)
        assert await _window(store, t.key_id) == 3
    finally:
        await live.server.stop(grace=1)
    assert await _window(store, t.key_id) == 2
