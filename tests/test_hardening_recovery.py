"""Issue 16, reliability: an outcome the relay knows survives a database blip; a killed instance's
rows are settled at the next start, a live instance's never."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import aiosmtplib

from relay.pipeline import recover
from tests.conftest import (
    KEY_SECRET,
    LiveRelay,
    PgServer,
    database_unreachable,
    eventually,
    relay_config,
    start_relay,
)
from tests.peer import Peer
from tests.smtp_helpers import login, message
from tests.test_serve import RELAY, free_port


async def _status(live: LiveRelay, message_id: str) -> str:
    return str(await live.store.pool.fetchval("SELECT status FROM messages WHERE id = $1::uuid", message_id))


async def test_every_250_seen_during_a_database_blip_ends_sent(relay: LiveRelay, pg: PgServer) -> None:
    t = await relay.tenant()
    relay.peer.handler.data_delay = 2.0  # the upstream holds DATA while the database goes away

    async def one(i: int) -> aiosmtplib.SMTPResponse:
        client = await login(relay.port, t.key)
        try:
            await client.mail(t.sender)
            await client.rcpt(f"r{i}@dest.test")
            return await client.data(message(t.sender, to=f"r{i}@dest.test"))
        finally:
            client.close()

    sends = [asyncio.create_task(one(i)) for i in range(3)]
    await eventually(lambda: len(relay.peer.handler.mail_options) == 3, what="the upstream holds the sends")
    async with database_unreachable(relay, pg.admin_dsn):
        replies = await asyncio.gather(*sends)  # answered while the database is still away
        assert [r.code for r in replies] == [250, 250, 250]
    ids = [r.message.split("OK: ", 1)[1].strip() for r in replies]
    # the database is back: a sweep now (age 0) must not take the rows whose outcome is pending
    await recover(relay.store, 0, relay.server.pipeline.unsettled)

    async def all_sent() -> bool:
        return [await _status(relay, i) for i in ids] == ["sent"] * 3

    await eventually(all_sent, timeout=20, what="every 250 ends as a sent row")
    assert len(relay.peer.messages) == 3
    assert await relay.balance(t) == 97
    assert not relay.server.pipeline.unsettled


async def test_rows_carry_their_instance(relay: LiveRelay) -> None:
    t = await relay.tenant()
    client = await login(relay.port, t.key)
    _, reply = await client.sendmail(t.sender, ["a@dest.test"], message(t.sender))
    assert reply.startswith("OK: ")
    client.close()
    instance = await relay.store.pool.fetchval("SELECT instance_id FROM messages")
    assert instance == relay.store.instance_id is not None


async def test_killed_instance_rows_settle_at_start_live_instance_rows_never(db_dsn, store, tmp_dir) -> None:
    hanging = await Peer().start()
    hanging.handler.data_delay = 60.0  # both instances' sends stay 'sending'
    # a live instance, in this process, with a send in flight
    live = await start_relay(relay_config(db_dsn, hanging.url, upstream={"timeout_seconds": 90.0},
                                          server={"recovery_after_seconds": 300.0}), store, hanging)
    # a second instance, `relay serve` in a process of its own, killed with SIGKILL mid-send
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(RELAY_DATABASE_URL=db_dsn, RELAY_SERVER_KEY_SECRET=KEY_SECRET.decode(),
               RELAY_SMTP_LISTEN=f"127.0.0.1:{port}", RELAY_SMTP_ALLOW_PLAINTEXT_AUTH="true",
               RELAY_HTTP_LISTEN=f"127.0.0.1:{free_port()}", RELAY_UPSTREAM_URL=hanging.url,
               RELAY_UPSTREAM_TIMEOUT_SECONDS="90", RELAY_SERVER_DATA_DIR=str(tmp_dir),
               RELAY_QUEUE_WORKER="false")
    proc = await asyncio.create_subprocess_exec(RELAY, "serve", env=env, stderr=asyncio.subprocess.DEVNULL)
    tasks: list[asyncio.Task[object]] = []
    try:
        t = await live.tenant(credits=10)

        async def accepting() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        await eventually(accepting, timeout=30, what="relay serve listens")

        async def send_via(p: int) -> object:
            client = await login(p, t.key)
            return await client.sendmail(t.sender, ["a@dest.test"], message(t.sender))

        tasks = [asyncio.create_task(send_via(port)), asyncio.create_task(send_via(live.port))]

        async def both_sending() -> bool:
            return await store.pool.fetchval("SELECT count(*) FROM messages WHERE status = 'sending'") == 2

        await eventually(both_sending, timeout=20, what="a send in flight on each instance")
        dead = await store.pool.fetchval("SELECT id FROM messages WHERE instance_id <> $1", store.instance_id)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

        # the restart: a new instance settles the dead one's row at start-up, far sooner than
        # recovery_after_seconds, and leaves the live instance's row alone
        restarted_store = await type(store).connect(db_dsn)
        restarted = await start_relay(relay_config(db_dsn, hanging.url, upstream={"timeout_seconds": 90.0}),
                                      restarted_store, hanging)
        try:
            rows = dict(await store.pool.fetch("SELECT id, status FROM messages"))
            assert rows[dead] == "failed"
            assert sorted(rows.values()) == ["failed", "sending"]
            assert await live.balance(t) == 9  # the dead instance's charge came back
        finally:
            await restarted.server.stop(grace=1)
            await restarted_store.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for task in tasks:
            task.cancel()
        await live.server.stop(grace=0.5)
        await hanging.stop()
