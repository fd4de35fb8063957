"""Start-up and shutdown: graceful SIGTERM-style stop, the recovery sweep, migrations."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import aiosmtplib
import asyncpg

from relay.pipeline import recover
from relay.store import migrate
from tests.conftest import rcpts, relay_config, start_relay
from tests.http_helpers import body_for
from tests.smtp_helpers import Raw, message, send


async def test_graceful_stop_finishes_data_in_flight(db_dsn, store, peer) -> None:
    peer.handler.data_delay = 1.0
    live = await start_relay(relay_config(db_dsn, peer.url), store, peer)
    t = await live.tenant(credits=10)
    idle = await Raw.open(live.port)
    sending = asyncio.create_task(send(live.port, t.key, t.sender, ["a@dest.test"], message(t.sender)))
    await asyncio.wait_for(peer.handler.mail_seen.wait(), 10)  # the message is with the slow upstream now
    await live.server.stop(grace=5)
    reply = await sending
    assert reply.code == 250 and len(peer.messages) == 1
    assert (await idle.reply()).startswith("421 4.3.2")  # idle clients are told, then closed
    assert await idle.closed()
    try:
        await asyncio.open_connection("127.0.0.1", live.port)
        accepted = True
    except OSError:
        accepted = False
    assert not accepted
    assert await live.balance(t) == 9


async def test_recovery_refunds_rows_a_crash_left_behind(relay) -> None:
    t = await relay.tenant(credits=10)
    stranded = uuid.uuid4()
    admission = await relay.store.admit(stranded, "smtp", t.key_id, t.account_id, t.sender, rcpts(3), 100, 1, 1000)
    assert admission.status == "sending"
    queued_without_body = uuid.uuid4()
    await relay.store.admit(queued_without_body, "smtp", t.key_id, t.account_id, t.sender, rcpts(2), 100, 1, 0)
    assert await relay.store.balance(t.account_id) == 5
    assert await recover(relay.store, older_than_seconds=300) == 0  # too recent: maybe still in flight
    async with relay.store.pool.acquire() as conn:
        await conn.execute("UPDATE messages SET updated_at = now() - interval '10 minutes'")
    assert await recover(relay.store, older_than_seconds=300) == 2
    assert await relay.balance(t) == 10
    for message_id in (stranded, queued_without_body):
        row = await relay.store.message(message_id)
        assert row["status"] == "failed" and row["credits_refunded"] == row["credits_charged"]
        assert row["failure_code"] == 4999
    assert await recover(relay.store, older_than_seconds=300) == 0  # never refunded twice
    assert await relay.balance(t) == 10


async def test_server_start_runs_recovery(db_dsn, store, peer) -> None:
    first = await start_relay(relay_config(db_dsn, peer.url), store, peer)
    t = await first.tenant(credits=10)
    await first.server.stop(grace=1)
    await store.admit(uuid.uuid4(), "smtp", t.key_id, t.account_id, t.sender, rcpts(1), 10, 1, 1000)
    async with store.pool.acquire() as conn:
        await conn.execute("UPDATE messages SET updated_at = now() - interval '1 hour'")
    second = await start_relay(relay_config(db_dsn, peer.url), store, peer)
    try:
        assert await second.balance(t) == 10
    finally:
        await second.server.stop(grace=1)


async def test_refund_happens_at_most_once(relay) -> None:
    t = await relay.tenant(credits=10)
    mid = uuid.uuid4()
    await relay.store.admit(mid, "api", t.key_id, t.account_id, t.sender, rcpts(2), 10, 1, 1000)
    results = await asyncio.gather(*(relay.store.finalize(mid, "failed", 2, "x", 4999) for _ in range(5)))
    assert sorted(results) == [False] * 4 + [True]
    assert await relay.balance(t) == 10


async def test_migrate_twice_is_a_noop(db_dsn) -> None:
    conn = await asyncpg.connect(db_dsn)  # the template is already migrated
    try:
        assert await migrate.migrate(conn) == []
        assert await migrate.pending(conn) == []
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == [m.version for m in migrate.available()]
    finally:
        await conn.close()


async def test_webhook_deliveries_has_an_index_for_its_event_cascade(db_dsn) -> None:
    """Deleting an event (retention) finds its deliveries by index, not by a scan per event."""
    conn = await asyncpg.connect(db_dsn)
    try:
        definition = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'webhook_deliveries' "
            "AND indexname = 'webhook_deliveries_event'")
        assert definition is not None and definition.endswith("(event_id)")
    finally:
        await conn.close()


async def test_concurrent_migrations_on_a_fresh_database(pg) -> None:
    name = f"m_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg.admin_dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        conns = [await asyncpg.connect(pg.dsn(name)) for _ in range(4)]
        try:
            ran = await asyncio.gather(*(migrate.migrate(c) for c in conns))
            assert sorted(len(r) for r in ran) == [0, 0, 0, len(migrate.available())]
            rows = await conns[0].fetch("SELECT version FROM schema_migrations")
            assert len(rows) == len(migrate.available())
        finally:
            for c in conns:
                await c.close()
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


async def test_graceful_stop_waits_for_a_send_whose_client_hung_up(db_dsn, store, peer) -> None:
    peer.handler.data_delay = 1.0
    live = await start_relay(relay_config(db_dsn, peer.url), store, peer)
    t = await live.tenant(credits=10)
    raw = await Raw.open(live.port)
    await raw.begin_data(t.key, t.sender)
    raw.writer.write(message(t.sender) + b".\r\n")
    await raw.writer.drain()
    await asyncio.wait_for(peer.handler.mail_seen.wait(), 10)  # admitted, with the slow upstream
    raw.writer.transport.abort()
    await live.server.stop(grace=5)  # returns only once the send is settled
    [row] = await store.logs()
    assert row["status"] == "sent" and len(peer.messages) == 1
    assert await live.balance(t) == 9


async def test_graceful_stop_waits_for_an_api_send_whose_client_hung_up(db_dsn, store, peer) -> None:
    import httpx

    peer.handler.data_delay = 1.0
    live = await start_relay(relay_config(db_dsn, peer.url), store, peer)
    t = await live.tenant(credits=10)
    body = body_for(t, to="a@dest.test")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{live.server.port('http')}") as http:
        request = asyncio.create_task(http.post("/v1/send", json=body,
                                                headers={"Authorization": f"Bearer {t.key}"}))
        await asyncio.wait_for(peer.handler.mail_seen.wait(), 10)  # admitted, waiting for the slow upstream
        request.cancel()  # the client goes away
        with contextlib.suppress(asyncio.CancelledError):
            await request
    await live.server.stop(grace=5)  # returns only once the send is settled
    [row] = await store.logs()
    assert row["status"] == "sent" and len(peer.messages) == 1
    assert await live.balance(t) == 9


async def test_an_outcome_arriving_after_the_sweep_is_logged_for_the_operator(db_dsn, store, peer, caplog) -> None:
    """If the recovery sweep fails and refunds a row whose send then succeeds, the log row cannot
    be changed back (refunds happen once); the operator is told instead of nothing."""
    peer.handler.data_delay = 1.0
    live = await start_relay(relay_config(db_dsn, peer.url), store, peer)
    t = await live.tenant(credits=10)
    sending = asyncio.create_task(send(live.port, t.key, t.sender, ["a@dest.test"], message(t.sender)))
    await asyncio.wait_for(peer.handler.mail_seen.wait(), 10)
    assert await recover(store, 0) == 1  # as a sweep with too short a margin would
    reply = await sending
    await live.server.stop(grace=2)
    assert reply.code == 250 and len(peer.messages) == 1
    [row] = await store.logs()
    assert row["status"] == "failed" and await live.balance(t) == 10
    assert "was already final when its outcome (sent) came" in caplog.text


async def test_a_send_still_relaying_when_the_grace_ends_is_logged(db_dsn, store, peer, caplog) -> None:
    peer.handler.data_delay = 2.0
    live = await start_relay(relay_config(db_dsn, peer.url), store, peer)
    t = await live.tenant(credits=10)
    sending = asyncio.create_task(send(live.port, t.key, t.sender, ["a@dest.test"], message(t.sender)))
    await asyncio.wait_for(peer.handler.mail_seen.wait(), 10)
    await live.server.stop(grace=0.2)
    assert "the grace ended with 1 send(s) still relaying" in caplog.text
    with contextlib.suppress(aiosmtplib.SMTPException):
        await sending  # its connection was closed at the end of the grace
    # here the database is still open, so the send's outcome still lands
    await asyncio.gather(*live.server.pipeline.in_flight)
    [row] = await store.logs()
    assert row["status"] == "sent" and await live.balance(t) == 9
