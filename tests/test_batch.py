"""Natural batching of store calls: the Batcher alone, then concurrent finalizes on a real database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import asyncpg
import pytest

from relay.errors import StoreUnavailable
from relay.store.batch import Batcher
from tests.conftest import rcpts


class Recorder:
    """one/many callables that record how they were called; items named 'bad' fail."""

    def __init__(self, delay: float = 0.01) -> None:
        self.calls: list[list[str]] = []
        self.delay = delay
        self.gate = asyncio.Event()  # every round trip waits for it: set it to hold them
        self.gate.set()

    async def _round_trip(self) -> None:
        await asyncio.sleep(self.delay)
        await self.gate.wait()

    async def one(self, item: str) -> str:
        self.calls.append([item])
        await self._round_trip()
        if item == "bad":
            raise ValueError("bad item")
        return item.upper()

    async def many(self, items: Sequence[str]) -> list[str]:
        self.calls.append(list(items))
        await self._round_trip()
        if "bad" in items:
            raise ValueError("a bad item spoils the batch")
        return [i.upper() for i in items]


async def test_a_lone_call_runs_alone_at_once() -> None:
    r = Recorder()
    batcher = Batcher(r.one, r.many)
    assert await batcher("a") == "A"
    assert await batcher("b") == "B"
    assert r.calls == [["a"], ["b"]] and batcher.round_trips == 2


async def test_calls_arriving_meanwhile_share_the_next_round_trip_in_order() -> None:
    r = Recorder()
    batcher = Batcher(r.one, r.many)
    results = await asyncio.gather(*(batcher(x) for x in "abcde"))
    assert results == ["A", "B", "C", "D", "E"]
    assert r.calls == [["a", "b", "c", "d", "e"]]
    first = asyncio.create_task(batcher("f"))
    await asyncio.sleep(0.001)  # f's round trip is in flight
    assert await asyncio.gather(*(batcher(x) for x in "ghi")) == ["G", "H", "I"]
    assert await first == "F"
    assert r.calls[1:] == [["f"], ["g", "h", "i"]]  # f ran at once; the rest waited for it


async def test_batches_are_bounded() -> None:
    r = Recorder()
    batcher = Batcher(r.one, r.many, max_batch=2)
    await asyncio.gather(*(batcher(x) for x in "abcde"))
    assert r.calls == [["a", "b"], ["c", "d"], ["e"]]


async def test_a_failing_batch_runs_its_items_alone_and_only_the_bad_one_fails() -> None:
    r = Recorder()
    batcher = Batcher(r.one, r.many)
    results = await asyncio.gather(*(batcher(x) for x in ["a", "b", "bad", "c"]), return_exceptions=True)
    assert results[:2] == ["A", "B"] and results[3] == "C"
    assert isinstance(results[2], ValueError) and str(results[2]) == "bad item"
    assert r.calls == [["a", "b", "bad", "c"], ["a"], ["b"], ["bad"], ["c"]]


async def test_a_caller_that_gives_up_strands_nobody_and_its_item_still_runs() -> None:
    r = Recorder()
    r.gate.clear()  # a's round trip stays in flight until the test says so
    batcher = Batcher(r.one, r.many)
    first = asyncio.create_task(batcher("a"))
    await asyncio.sleep(0)
    others = [asyncio.create_task(batcher(x)) for x in "bc"]
    await asyncio.sleep(0.02)
    assert r.calls == [["a"]]
    first.cancel()  # gives up while its round trip is in flight
    with pytest.raises(asyncio.CancelledError):
        await first
    r.gate.set()
    assert await asyncio.gather(*others) == ["B", "C"]
    assert r.calls == [["a"], ["b", "c"]]


# -- on the database -------------------------------------------------------------------------------


async def _admitted(relay, tenant, n: int) -> list[uuid.UUID]:
    ids = []
    for _ in range(n):
        mid = uuid.uuid4()
        admission = await relay.store.admit(mid, "smtp", tenant.key_id, tenant.account_id, tenant.sender,
                                            rcpts(1), 100, 1, 1000)
        assert admission.status == "sending"
        ids.append(mid)
    return ids


async def test_concurrent_finalizes_commit_together_with_the_same_effects(relay) -> None:
    t = await relay.tenant(credits=20)
    ids = await _admitted(relay, t, 12)
    assert await relay.balance(t) == 8
    before = relay.store.finalizer.round_trips
    outcomes = [("sent", 0), ("failed", 1)] * 6
    results = await asyncio.gather(*(relay.store.finalize(mid, status, refund, "250 ok", None)
                                     for mid, (status, refund) in zip(ids, outcomes, strict=True)))
    assert results == [True] * 12
    assert relay.store.finalizer.round_trips - before < 12  # batched
    rows = {r["id"]: r for r in await relay.store.pool.fetch(
        "SELECT id, status, credits_refunded FROM messages WHERE id = ANY($1)", ids)}
    assert [(rows[m]["status"], rows[m]["credits_refunded"]) for m in ids] == outcomes
    assert await relay.balance(t) == 14  # six refunds, and the ledger agrees (relay.balance checks)
    # already final: a second finalize of each changes nothing, batched or not
    again = await asyncio.gather(*(relay.store.finalize(mid, "failed", 1, "x", None) for mid in ids))
    assert again == [False] * 12 and await relay.balance(t) == 14


async def test_one_bad_finalize_does_not_fail_the_others_in_its_batch(relay) -> None:
    t = await relay.tenant(credits=10)
    ids = await _admitted(relay, t, 4)
    # "bogus" violates the status CHECK
    calls = [relay.store.finalize(mid, "bogus" if i == 2 else "sent", 0, "250 ok", None)
             for i, mid in enumerate(ids)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0] is True and results[1] is True and results[3] is True
    assert isinstance(results[2], StoreUnavailable)  # the store's own error, the driver's as cause
    assert isinstance(results[2].__cause__, asyncpg.CheckViolationError)
    statuses = [await relay.store.pool.fetchval("SELECT status FROM messages WHERE id = $1", m) for m in ids]
    assert statuses == ["sent", "sent", "sending", "sent"]
    assert await relay.balance(t) == 6


async def test_an_error_that_is_nobodys_fault_fails_the_whole_batch_at_once() -> None:
    r = Recorder()
    batcher = Batcher(r.one, r.many, item_error=lambda exc: False)  # e.g. the connection was lost
    results = await asyncio.gather(*(batcher(x) for x in ["a", "bad", "c"]), return_exceptions=True)
    assert all(isinstance(x, ValueError) and str(x) == "a bad item spoils the batch" for x in results)
    assert r.calls == [["a", "bad", "c"]]  # no one-by-one retries against a dead database


async def _admit(relay, tenant, *, cost: int = 1, cap: int = 1000, key: str | None = None,
                 fingerprint: bytes | None = None) -> str:
    admission = await relay.store.admit(uuid.uuid4(), "api", tenant.key_id, tenant.account_id, tenant.sender,
                                        rcpts(cost), 100, 1, cap, key, fingerprint)
    return admission.status


async def test_concurrent_admits_share_a_statement_and_each_sees_the_debits_before_it(relay) -> None:
    t = await relay.tenant(credits=5)
    before = relay.store.admitter.round_trips
    statuses = await asyncio.gather(*(_admit(relay, t) for _ in range(8)))
    assert relay.store.admitter.round_trips - before < 8  # batched
    # in arrival order: the first five are paid for, the rest find the balance spent
    assert statuses[:5] == ["sending"] * 5
    assert all(s.startswith("INSUFFICIENT") for s in statuses[5:])
    assert await relay.balance(t) == 0
    assert await relay.store.pool.fetchval(
        "SELECT count(*) FROM messages WHERE account_id = $1 AND status = 'sending'", t.account_id) == 5


async def test_a_batch_of_admits_for_several_accounts_gives_each_caller_its_own_answer(relay) -> None:
    """Admits run sorted by account (lock order); each answer still goes back to its caller."""
    rich = await relay.tenant(credits=5, sender="b@rich.example")
    poor = await relay.tenant(credits=1, sender="a@poor.example")
    assert rich.account_id < poor.account_id  # so the lock order is not the arrival order below
    order = [poor, rich] * 4
    statuses = await asyncio.gather(*(_admit(relay, t) for t in order))
    assert statuses[0] == "sending" and statuses[1::2] == ["sending"] * 4
    assert all(s.startswith("INSUFFICIENT") for s in statuses[2::2])
    assert (await relay.balance(poor), await relay.balance(rich)) == (0, 1)


async def test_the_daily_cap_and_idempotency_hold_inside_one_batch(relay) -> None:
    t = await relay.tenant(credits=100)
    capped = await asyncio.gather(*(_admit(relay, t, cap=2) for _ in range(5)))
    assert capped.count("sending") == 2 and capped.count("queued") == 3
    same = await asyncio.gather(_admit(relay, t), *(_admit(relay, t, key="k1", fingerprint=b"x") for _ in range(2)),
                                _admit(relay, t, key="k1", fingerprint=b"y"))
    assert same[1:] == ["sending", "IDEMPOTENCY_IN_FLIGHT", "IDEMPOTENCY_MISMATCH"]
    assert await relay.balance(t) == 100 - 5 - 2


async def test_concurrent_calls_of_one_key_share_a_statement_and_the_rate_limit_holds(relay) -> None:
    t = await relay.tenant(rate=3)
    before = relay.store.opener.round_trips
    results = await asyncio.gather(*(relay.store.open_call(t.key_id, 1000) for _ in range(6)))
    assert relay.store.opener.round_trips - before < 6  # batched
    assert [r.retry_after == 0 for r in results] == [True] * 3 + [False] * 3
    assert all(r.enabled for r in results) and results[0].credits == 100


async def test_a_failed_admit_batch_is_rolled_back_and_each_rerun_debits_once(relay) -> None:
    """One bad admit ('bogus' violates the channel CHECK) fails the batch's one statement; the
    items then run alone: the good ones are debited, capped and logged exactly once."""
    t = await relay.tenant(credits=10)
    before = relay.store.admitter.round_trips
    calls = [relay.store.admit(uuid.uuid4(), "bogus" if i == 2 else "api", t.key_id, t.account_id,
                               t.sender, rcpts(1), 100, 1, 1000) for i in range(5)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[2], StoreUnavailable)  # the store's own error, the driver's as cause
    assert isinstance(results[2].__cause__, asyncpg.CheckViolationError)
    assert [r.status for i, r in enumerate(results) if i != 2] == ["sending"] * 4
    assert relay.store.admitter.round_trips - before > 5  # a batch failed, then each ran alone
    assert await relay.balance(t) == 6  # four debits, and the ledger holds exactly four
    assert await relay.store.pool.fetchval("SELECT count(*) FROM messages WHERE account_id = $1",
                                           t.account_id) == 4
    assert await relay.store.pool.fetchval("SELECT sent FROM sender_day_counts WHERE sender = $1",
                                           t.sender) == 4


async def test_a_failed_rate_limit_batch_is_rolled_back_and_each_rerun_counts_once(relay) -> None:
    """A key id PostgreSQL refuses (a NUL byte) fails the batch; the other calls, run alone,
    count once each in the key's window."""
    t = await relay.tenant(rate=1000)
    before = relay.store.opener.round_trips
    calls = [relay.store.open_call("bad\x00id" if i == 1 else t.key_id, 1000) for i in range(4)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[1], StoreUnavailable) and isinstance(results[1].__cause__, asyncpg.PostgresError)
    assert all(r.retry_after == 0 and r.enabled for i, r in enumerate(results) if i != 1)
    assert relay.store.opener.round_trips - before > 4
    counted = await relay.store.pool.fetchval(
        "SELECT (SELECT sum(c) FROM unnest(counts) AS c) FROM rate_windows WHERE key_id = $1", t.key_id)
    assert counted == 3
