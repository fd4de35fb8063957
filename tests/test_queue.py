"""The cap queue: delivery after the day turns, retries and their failure codes, crash safety,
several instances on one database, retention, and messages whose account changed after queueing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosmtplib
import asyncpg

from relay.config import LimitsConfig, QueueConfig
from relay.queue import PROMISE, QueueWorker
from relay.store.store import Store
from relay.upstream.smtp import SmtpUpstream
from tests.conftest import KEY_SECRET, eventually, relay_config, start_relay
from tests.peer import Peer
from tests.smtp_helpers import message, send

FAST = QueueConfig(rate_per_second=1000, poll_seconds=0.2, retry_base_seconds=60, retry_max_seconds=3600)
RELAY = str(Path(sys.executable).parent / "relay")


async def queue_one(relay, tenant, recipients=("a@dest.test",)) -> uuid.UUID:
    """Send over the cap through the real SMTP path; the id of the queued message."""
    reply = await send(relay.port, tenant.key, tenant.sender, list(recipients), message(tenant.sender))
    assert reply.message.startswith("queued: "), reply
    return uuid.UUID(reply.message.removeprefix("queued: "))


def worker(store: Store, peer: Peer, clock, queue: QueueConfig = FAST) -> QueueWorker:
    upstream = SmtpUpstream(peer.url, timeout=2, pool_size=4)
    return QueueWorker(store, upstream, LimitsConfig(), queue, clock)


async def refunds(store: Store, message_id: uuid.UUID) -> int:
    return int(await store.pool.fetchval(
        "SELECT count(*) FROM credit_ledger WHERE message_id = $1 AND kind = 'refund'", message_id))


async def test_delivered_once_the_day_turns(relay) -> None:
    t = await relay.tenant(credits=10, daily_cap=1)
    await send(relay.port, t.key, t.sender, ["first@dest.test"], message(t.sender))
    queued = await queue_one(relay, t, ("a@dest.test", "b@dest.test"))
    row = await relay.store.message(queued)
    turn = row["deliver_after"]
    assert turn.astimezone(UTC).time() == datetime.min.time() and turn > row["created_at"]

    before = worker(relay.store, relay.peer, lambda: turn - timedelta(seconds=1))
    assert (await before.deliver_due()).handled == 0
    after = worker(relay.store, relay.peer, lambda: turn + timedelta(minutes=1))
    tally = await after.deliver_due()
    assert (tally.sent, tally.failed, tally.retried) == (1, 0, 0)
    assert [m.recipients for m in relay.peer.messages] == [["first@dest.test"], ["a@dest.test", "b@dest.test"]]
    row = await relay.store.message(queued)
    assert row["status"] == "sent" and row["credits_charged"] == 2 and row["credits_refunded"] == 0
    assert await relay.balance(t) == 7
    # queued messages do not count against the next day's cap
    counts = await relay.store.pool.fetch("SELECT day, sent FROM sender_day_counts")
    assert [(r["sent"]) for r in counts] == [1]
    assert (await after.deliver_due()).handled == 0  # delivered exactly once
    await after.upstream.close()


async def test_transient_failures_back_off_then_succeed(relay) -> None:
    t = await relay.tenant(credits=10, daily_cap=0)
    queued = await queue_one(relay, t)
    start = (await relay.store.message(queued))["deliver_after"] + timedelta(minutes=1)
    now = [start]
    w = worker(relay.store, relay.peer, lambda: now[0])
    relay.peer.handler.mail_reply = "451 4.7.1 Greylisted, try again later"
    assert (await w.deliver_due()).retried == 1
    row = await relay.store.message(queued)
    assert row["status"] == "queued" and row["attempts"] == 1 and row["deliver_after"] == start + timedelta(seconds=60)
    assert (await w.deliver_due()).handled == 0  # not due yet
    now[0] = row["deliver_after"]
    assert (await w.deliver_due()).retried == 1
    row = await relay.store.message(queued)
    assert row["attempts"] == 2 and row["deliver_after"] == now[0] + timedelta(seconds=120)
    relay.peer.handler.mail_reply = None
    now[0] = row["deliver_after"]
    assert (await w.deliver_due()).sent == 1
    assert (await relay.store.message(queued))["status"] == "sent"
    assert await relay.balance(t) == 9
    await w.upstream.close()


async def test_deferred_until_the_promise_runs_out_is_3003_refunded_once(relay) -> None:
    t = await relay.tenant(credits=10, daily_cap=0)
    queued = await queue_one(relay, t)
    created = (await relay.store.message(queued))["created_at"]
    relay.peer.handler.mail_reply = "450 4.2.1 Mailbox busy, try again later"
    w = worker(relay.store, relay.peer, lambda: created + PROMISE - timedelta(seconds=30))
    async with relay.store.pool.acquire() as conn:
        await conn.execute("UPDATE messages SET deliver_after = $1::timestamptz - interval '1 hour' WHERE id = $2",
                           created + PROMISE, queued)
    assert (await w.deliver_due()).failed == 1
    row = await relay.store.message(queued)
    assert row["status"] == "failed" and row["failure_code"] == 3003 and row["credits_refunded"] == 1
    assert await relay.balance(t) == 10 and await refunds(relay.store, queued) == 1
    await w.upstream.close()


async def test_unreachable_until_the_promise_runs_out_is_4004(relay) -> None:
    t = await relay.tenant(credits=10, daily_cap=0)
    queued = await queue_one(relay, t)
    created = (await relay.store.message(queued))["created_at"]
    dead = Peer()  # never started: connection refused
    dead.port = relay.peer.port
    await relay.peer.stop()
    async with relay.store.pool.acquire() as conn:
        await conn.execute("UPDATE messages SET deliver_after = now() - interval '1 day' WHERE id = $1", queued)
    w = worker(relay.store, dead, lambda: created + PROMISE - timedelta(seconds=30))
    assert (await w.deliver_due()).failed == 1
    row = await relay.store.message(queued)
    assert row["failure_code"] == 4004 and row["credits_refunded"] == 1
    assert await relay.balance(t) == 10
    await w.upstream.close()


async def test_permanent_failure_fails_at_once_with_its_code(relay) -> None:
    t = await relay.tenant(credits=10, daily_cap=0)
    queued = await queue_one(relay, t, ("gone@dest.test", "x@dest.test"))
    relay.peer.handler.data_reply = "552 5.2.2 Mailbox full"
    w = worker(relay.store, relay.peer, lambda: datetime.now(UTC) + timedelta(days=1, minutes=-1))
    async with relay.store.pool.acquire() as conn:
        await conn.execute("UPDATE messages SET deliver_after = now() WHERE id = $1", queued)
    assert (await w.deliver_due()).failed == 1
    row = await relay.store.message(queued)
    assert row["status"] == "failed" and row["failure_code"] == 3001 and row["credits_refunded"] == 2
    assert await relay.balance(t) == 10 and await refunds(relay.store, queued) == 1
    await w.upstream.close()


async def test_never_tried_within_24_hours_fails_expired(relay) -> None:
    t = await relay.tenant(credits=10, daily_cap=0)
    queued = await queue_one(relay, t)
    created = (await relay.store.message(queued))["created_at"]
    w = worker(relay.store, relay.peer, lambda: created + PROMISE + timedelta(minutes=5))
    assert (await w.deliver_due()).failed == 1
    row = await relay.store.message(queued)
    assert row["failure_code"] == 4004 and relay.peer.messages == []
    assert await relay.balance(t) == 10
    await w.upstream.close()


async def release_in_subprocess(db_dsn: str, peer: Peer) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(RELAY_DATABASE_URL=db_dsn, RELAY_SERVER_KEY_SECRET=KEY_SECRET.decode(), RELAY_UPSTREAM_URL=peer.url)
    return await asyncio.create_subprocess_exec(RELAY, "queue", "release", "--json", env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)


async def test_kill_9_during_delivery_loses_nothing_and_charges_once(relay, db_dsn) -> None:
    t = await relay.tenant(credits=10, daily_cap=0)
    queued = await queue_one(relay, t)
    relay.peer.handler.mail_delay = 5
    proc = await release_in_subprocess(db_dsn, relay.peer)
    await asyncio.wait_for(relay.peer.handler.mail_seen.wait(), 30)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    # nothing in between: still queued, body kept, charge kept, no refund
    row = await relay.store.message(queued)
    assert row["status"] == "queued" and row["attempts"] == 0
    assert await relay.store.pool.fetchval("SELECT count(*) FROM queued_bodies") == 1
    assert await relay.balance(t) == 9
    # PostgreSQL rolls the dead client's transaction back once it notices the closed socket
    for _ in range(100):
        try:
            async with relay.store.pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE NOWAIT", queued)
            break
        except asyncpg.LockNotAvailableError:
            await asyncio.sleep(0.05)
    # the next run delivers it, once
    relay.peer.handler.mail_delay = 0
    proc = await release_in_subprocess(db_dsn, relay.peer)
    out, _ = await proc.communicate()
    assert b'"sent": 1' in out, (await relay.store.message(queued))["upstream_reply"]
    assert len(relay.peer.messages) == 1
    assert (await relay.store.message(queued))["status"] == "sent"
    assert await relay.balance(t) == 9


async def test_two_workers_share_the_queue_each_message_once(relay, db_dsn) -> None:
    t = await relay.tenant(credits=100, daily_cap=0)
    ids = [await queue_one(relay, t, (f"r{i}@dest.test",)) for i in range(12)]
    other = await Store.connect(db_dsn, max_size=4)
    try:
        when = datetime.now(UTC) + timedelta(days=1, minutes=-2)
        async with relay.store.pool.acquire() as conn:
            await conn.execute("UPDATE messages SET deliver_after = now()")
        a, b = worker(relay.store, relay.peer, lambda: when), worker(other, relay.peer, lambda: when)
        tallies = await asyncio.gather(a.deliver_due(), b.deliver_due())
        assert sum(x.sent for x in tallies) == 12 and all(x.sent > 0 for x in tallies)
        delivered = sorted(m.recipients[0] for m in relay.peer.messages)
        assert delivered == sorted(f"r{i}@dest.test" for i in range(12))
        for mid in ids:
            assert (await relay.store.message(mid))["status"] == "sent"
        await a.upstream.close()
        await b.upstream.close()
    finally:
        await other.close()


async def test_two_instances_one_balance_one_rate_limit_one_cap(db_dsn, peer) -> None:
    stores = [await Store.connect(db_dsn, max_size=10) for _ in range(2)]
    lives = [await start_relay(relay_config(db_dsn, peer.url), s, peer) for s in stores]
    try:
        async def burst(tenant, n: int) -> list[str]:
            async def one(i: int) -> str:
                port = lives[i % 2].port
                try:
                    reply = await send(port, tenant.key, tenant.sender, [f"r{i}@dest.test"], message(tenant.sender))
                    return reply.message.split(":")[0]
                except aiosmtplib.SMTPResponseException as exc:
                    return str(exc.code)
            return list(await asyncio.gather(*(one(i) for i in range(n))))

        poor = await lives[0].tenant(credits=6)
        results = await burst(poor, 16)
        assert results.count("OK") == 6 and results.count("451") == 10
        assert await lives[1].balance(poor) == 0

        limited = await lives[0].tenant(credits=100, rate=5)
        results = await burst(limited, 12)
        assert results.count("OK") == 5 and results.count("421") == 7
        assert await lives[1].balance(limited) == 95

        capped = await lives[0].tenant(credits=100, daily_cap=3, sender="capped@example.com")
        results = await burst(capped, 9)
        assert results.count("OK") == 3 and results.count("queued") == 6
    finally:
        for live in lives:
            await live.server.stop(grace=1)
        for s in stores:
            await s.close()


async def test_server_worker_delivers_when_due_and_wakes_on_release(db_dsn, store, peer) -> None:
    cfg = relay_config(db_dsn, peer.url, queue={"worker": True, "poll_seconds": 30.0, "rate_per_second": 100.0})
    live = await start_relay(cfg, store, peer)
    try:
        t = await live.tenant(credits=10, daily_cap=0)
        queued = await queue_one(live, t)
        await asyncio.sleep(0.3)
        assert peer.messages == []  # not due: the day has not turned
        assert await store.release(datetime.now(UTC)) == 1  # NOTIFY wakes the worker at once
        for _ in range(50):
            if peer.messages:
                break
            await asyncio.sleep(0.05)
        assert len(peer.messages) == 1
        assert (await store.message(queued))["status"] == "sent"
    finally:
        await live.server.stop(grace=1)


async def test_a_wake_up_during_a_pass_that_finds_nothing_is_not_lost(relay) -> None:
    """A NOTIFY arriving while a pass looks and finds nothing runs the next pass at once, not a poll
    interval later (the worker used to clear the wake-up after the pass, losing this one)."""
    t = await relay.tenant(credits=10, daily_cap=0)
    queued = await queue_one(relay, t)
    due = (await relay.store.message(queued))["deliver_after"] + timedelta(minutes=1)
    looks: list[datetime] = []

    def clock() -> datetime:
        if not looks:  # the first look: not due yet, and the release's NOTIFY comes meanwhile
            looks.append(due - timedelta(hours=1))
            w.wake()
        else:
            looks.append(due)
        return looks[-1]

    w = worker(relay.store, relay.peer, clock, QueueConfig(rate_per_second=1000, poll_seconds=30))
    task = asyncio.create_task(w.run())
    try:
        await eventually(lambda: len(relay.peer.messages) == 1, timeout=5, what="the next pass, at once")
        assert (await relay.store.message(queued))["status"] == "sent"
    finally:
        w.stop()
        await asyncio.wait_for(task, 5)
        await w.upstream.close()


async def test_a_worker_stopped_as_it_starts_ends_at_once(relay) -> None:
    """stop() while the loop is still setting up its LISTEN must not be forgotten (relay dev stopped
    right after its banner used to wait out the poll interval)."""
    w = worker(relay.store, relay.peer, lambda: datetime.now(UTC), QueueConfig(poll_seconds=30))
    task = asyncio.create_task(w.run())
    await asyncio.sleep(0)  # run() is under way, awaiting its LISTEN connection
    w.stop()
    try:
        await asyncio.wait_for(task, 5)
    finally:
        await w.upstream.close()


async def test_retention_removes_bodies_and_old_rows_in_batches(relay) -> None:
    t = await relay.tenant(credits=100, daily_cap=0)
    ids = [await queue_one(relay, t) for _ in range(5)]
    async with relay.store.pool.acquire() as conn:
        await conn.execute("UPDATE messages SET deliver_after = now()")
    w = worker(relay.store, relay.peer, lambda: datetime.now(UTC) + timedelta(minutes=1))
    assert (await w.deliver_due()).sent == 5
    await w.upstream.close()
    assert await relay.store.pool.fetchval("SELECT count(*) FROM queued_bodies") == 5  # kept until cleanup
    kept = await relay.store.cleanup(keep_bodies_hours=1, log_days=90, batch=2)
    assert kept["bodies"] == 0
    removed = await relay.store.cleanup(keep_bodies_hours=0, log_days=90, batch=2)
    assert removed["bodies"] == 5 and removed["messages"] == 0
    async with relay.store.pool.acquire() as conn:
        await conn.execute("UPDATE messages SET finished_at = now() - interval '100 days' WHERE id = ANY($1)",
                           ids[:3])
    removed = await relay.store.cleanup(keep_bodies_hours=0, log_days=90, batch=2)
    assert removed["messages"] == 3
    assert {r["id"] for r in await relay.store.logs()} == set(ids[3:])
    assert await relay.balance(t) == 95  # the ledger outlives the log rows


async def test_queued_message_survives_later_account_changes(relay) -> None:
    """Accepted and charged means delivered: a later key disable, sender removal or account deletion
    does not stop a queued message (README: Queue)."""
    when = datetime.now(UTC) + timedelta(minutes=1)
    cases = []
    for change in ("disable key", "remove sender", "delete account"):
        t = await relay.tenant(credits=10, daily_cap=0, sender=f"{change.split()[0]}@example.com")
        cases.append((change, t, await queue_one(relay, t)))
    async with relay.store.pool.acquire() as conn:
        await conn.execute("UPDATE messages SET deliver_after = now()")
        await conn.execute("UPDATE api_keys SET enabled = false WHERE id = $1", cases[0][1].key_id)
        await conn.execute("DELETE FROM senders WHERE account_id = $1", cases[1][1].account_id)
        await conn.execute("DELETE FROM accounts WHERE id = $1", cases[2][1].account_id)
    w = worker(relay.store, relay.peer, lambda: when)
    assert (await w.deliver_due()).sent == 3
    await w.upstream.close()
    for change, _t, mid in cases:
        assert (await relay.store.message(mid))["status"] == "sent", change
    assert len(relay.peer.messages) == 3


class _BrokenOnce:
    """An upstream with a bug on its first call: the worker must survive it and deliver later."""

    in_use = 0

    def __init__(self, real) -> None:
        self.real = real
        self.calls = 0

    async def deliver(self, mail_from, recipients, data, **_):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("bug")
        return await self.real.deliver(mail_from, recipients, data)

    async def close(self) -> None:
        await self.real.close()


async def test_worker_survives_a_bug_and_delivers_later(relay) -> None:
    t = await relay.tenant(credits=10, daily_cap=0)
    queued = await queue_one(relay, t)
    async with relay.store.pool.acquire() as conn:
        await conn.execute("UPDATE messages SET deliver_after = now()")
    w = worker(relay.store, relay.peer, lambda: datetime.now(UTC) + timedelta(minutes=1),
               QueueConfig(rate_per_second=1000, poll_seconds=0.1))
    w.upstream = _BrokenOnce(w.upstream)
    task = asyncio.create_task(w.run())
    try:
        for _ in range(200):  # settled, not merely handed over: cancelling before the commit rolls it back
            if (await relay.store.message(queued))["status"] == "sent":
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(relay.peer.messages) == 1 and w.upstream.calls == 2
    assert (await relay.store.message(queued))["status"] == "sent"
    await w.upstream.close()


async def test_shutdown_lets_the_delivery_in_hand_finish_and_claims_no_more(db_dsn, store, peer) -> None:
    """Cancelling a delivery would roll its claim back after the upstream took the message."""
    cfg = relay_config(db_dsn, peer.url, queue={"worker": True, "poll_seconds": 30.0, "rate_per_second": 100.0})
    live = await start_relay(cfg, store, peer)
    t = await live.tenant(credits=10, daily_cap=0)
    first, second = await queue_one(live, t), await queue_one(live, t)
    peer.handler.data_delay = 1.0
    assert await store.release(datetime.now(UTC)) == 2
    await asyncio.wait_for(peer.handler.mail_seen.wait(), 10)  # the worker is delivering one of them
    await live.server.stop(grace=5)
    statuses = sorted([(await store.message(first))["status"], (await store.message(second))["status"]])
    assert statuses == ["queued", "sent"]  # the one in hand went out; the other waits for the next start
    assert len(peer.messages) == 1
    assert await live.balance(t) == 8  # both charged once; nothing refunded, nothing lost


async def test_stop_while_looking_for_due_messages_returns_at_once(relay) -> None:
    """stop() arriving while the worker queries for due messages must not be forgotten: the worker
    used to clear that wake-up and sleep out its whole poll interval (the shutdown grace, by default)."""
    slow_poll = QueueConfig(rate_per_second=1000, poll_seconds=30, retry_base_seconds=60, retry_max_seconds=3600)
    w = worker(relay.store, relay.peer, lambda: datetime.now(UTC), slow_poll)
    deliver_due = w.deliver_due

    async def stopped_meanwhile(*args, **kwargs):
        tally = await deliver_due(*args, **kwargs)  # the real query: nothing is due
        w.stop()
        return tally

    w.deliver_due = stopped_meanwhile  # type: ignore[method-assign]
    await asyncio.wait_for(w.run(), 5)
    await w.upstream.close()


async def test_partial_refusal_at_delivery_refunds_the_refused_recipients(relay) -> None:
    """A queued message whose upstream refuses one of its recipients is sent to the others and
    refunds the refused one's credit, as an immediate send does."""
    t = await relay.tenant(credits=10, daily_cap=0)
    queued = await queue_one(relay, t, ("a@dest.test", "gone@dest.test", "b@dest.test"))
    assert await relay.balance(t) == 7
    relay.peer.handler.rcpt_replies["gone@dest.test"] = "550 5.1.1 no such user"
    row = await relay.store.message(queued)
    due = worker(relay.store, relay.peer, lambda: row["deliver_after"] + timedelta(minutes=1))
    tally = await due.deliver_due()
    assert (tally.sent, tally.failed, tally.retried) == (1, 0, 0)
    assert [m.recipients for m in relay.peer.messages] == [["a@dest.test", "b@dest.test"]]
    row = await relay.store.message(queued)
    assert row["status"] == "sent" and row["credits_charged"] == 3 and row["credits_refunded"] == 1
    assert await relay.balance(t) == 8 and await refunds(relay.store, queued) == 1
    assert (await due.deliver_due()).handled == 0
    await due.upstream.close()
