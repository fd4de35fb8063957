"""Issue 16, SMTP side: protocol corner cases, slow clients, NUL bytes, Bcc hygiene (raw sockets)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from relay.upstream.maildir import MaildirUpstream
from tests.conftest import LiveRelay, assert_untouched, running_relay
from tests.smtp_helpers import Raw, login, message
from tests.test_smtp_security import ca, certs, client_context  # noqa: F401  (fixtures)


def running(db_dsn: str, store, peer, **smtp: object) -> contextlib.AbstractAsyncContextManager[LiveRelay]:  # type: ignore[no-untyped-def]
    """A live relay with these [smtp] settings."""
    return running_relay(db_dsn, store, peer, smtp=dict(smtp))


async def test_second_starttls_is_a_bad_sequence(db_dsn, store, peer, certs, ca) -> None:  # noqa: F811
    async with running(db_dsn, store, peer, tls_cert=certs["cert"], tls_key=certs["key"]) as live:
        raw = await Raw.open(live.port)
        assert "STARTTLS" in await raw.cmd("EHLO client.test")
        assert (await raw.cmd("STARTTLS")).startswith("220")
        await raw.writer.start_tls(client_context(ca), server_hostname="relay.test")
        assert "STARTTLS" not in await raw.cmd("EHLO client.test")
        assert (await raw.cmd("STARTTLS")).startswith("503 5.5.1")
        # the session is still usable after the refusal
        assert (await raw.cmd("NOOP")).startswith("250")
        raw.close()


async def test_second_starttls_on_implicit_tls_is_a_bad_sequence(db_dsn, store, peer, certs, ca) -> None:  # noqa: F811
    async with running(db_dsn, store, peer, tls_cert=certs["cert"], tls_key=certs["key"],
                       implicit_tls_listen="127.0.0.1:0") as live:
        reader, writer = await asyncio.open_connection("127.0.0.1", live.server.port("smtps"),
                                                       ssl=client_context(ca), server_hostname="relay.test")
        raw = Raw(reader, writer)
        assert (await raw.reply()).startswith("220")
        await raw.cmd("EHLO client.test")
        assert (await raw.cmd("STARTTLS")).startswith("503 5.5.1")
        raw.close()


async def test_idle_timeout_says_421_before_closing(db_dsn, store, peer) -> None:
    async with running(db_dsn, store, peer, idle_timeout_seconds=0.5) as live:
        raw = await Raw.open(live.port)
        await raw.cmd("EHLO client.test")
        reply = await raw.reply(timeout=5)
        assert reply.startswith("421 4.4.2") and "timeout" in reply
        assert await raw.closed()


async def test_trickled_data_is_cut_at_the_data_deadline(db_dsn, store, peer) -> None:
    # the idle timeout (10 s) alone never fires: a byte comes every 0.2 s
    async with running(db_dsn, store, peer, idle_timeout_seconds=10.0, data_timeout_seconds=1.5) as live:
        t = await live.tenant()
        raw = await Raw.open(live.port)
        await raw.begin_data(t.key, t.sender)
        started = asyncio.get_running_loop().time()

        async def trickle() -> None:
            for byte in message(t.sender) * 20:
                raw.writer.write(bytes([byte]))
                await raw.writer.drain()
                await asyncio.sleep(0.2)

        dripping = asyncio.create_task(trickle())
        try:
            reply = await raw.reply(timeout=8)
        finally:
            dripping.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await dripping
        assert reply.startswith("421 4.4.2") and "DATA timeout" in reply
        assert asyncio.get_running_loop().time() - started < 5
        assert await raw.closed()
        await assert_untouched(live, t, 100)


async def test_nul_byte_in_data_is_refused(relay: LiveRelay) -> None:
    t = await relay.tenant()
    raw = await Raw.open(relay.port)
    await raw.begin_data(t.key, t.sender)
    reply = await raw.cmd(f"From: {t.sender}\r\nTo: a@dest.test\r\n\r\nhello\r\n.\x00\r\n.\r\n".encode())
    assert reply.startswith("550 5.6.0"), reply
    raw.close()
    await assert_untouched(relay, t, 100)


async def test_resent_bcc_is_stripped(relay: LiveRelay) -> None:
    t = await relay.tenant()
    client = await login(relay.port, t.key)
    data = message(t.sender, extra_headers="Resent-Bcc: hidden@dest.test\r\nResent-bcc : other@dest.test\r\n")
    await client.sendmail(t.sender, ["a@dest.test", "hidden@dest.test"], data)
    client.close()
    received = relay.peer.messages[0]
    assert b"resent-bcc" not in received.data.lower()
    assert b"hidden@dest.test" not in received.data
    assert sorted(received.recipients) == ["a@dest.test", "hidden@dest.test"]


async def test_maildir_does_not_reveal_bcc(tmp_path: Path) -> None:
    upstream = MaildirUpstream(tmp_path / "mail")
    data = b"From: app@example.com\r\nTo: seen@dest.test\r\nSubject: s\r\n\r\nhi\r\n"
    delivery = await upstream.deliver("app@example.com", ["seen@dest.test", "secret@dest.test"], data)
    assert delivery.reply.startswith("250")
    (stored,) = list((tmp_path / "mail" / "new").iterdir())
    text = stored.read_bytes()
    assert b"X-Original-To: seen@dest.test\r\n" in text
    assert b"secret@dest.test" not in text


async def test_parallel_auth_guesses_cost_what_serial_ones_do(db_dsn, store, peer) -> None:
    # delay after 3 failures, refuse after 5: 30 parallel wrong keys get at most 5 x 535
    async with running(db_dsn, store, peer, auth_failures_before_delay=3, auth_failures_before_refusal=5,
                       max_connections_per_address=0) as live:
        t = await live.tenant()
        wrong = t.key[:-4] + ("aaaa" if not t.key.endswith("aaaa") else "bbbb")

        async def guess() -> str:
            raw = await Raw.open(live.port)
            try:
                return await raw.auth(wrong)
            finally:
                raw.close()

        replies = await asyncio.gather(*(guess() for _ in range(30)))
        codes = [r[:3] for r in replies]
        assert codes.count("535") <= 5, codes
        assert codes.count("421") >= 25, codes
        assert "235" not in codes
        # and the right key is refused too now: the address is over its limit
        raw = await Raw.open(live.port)
        assert (await raw.auth(t.key)).startswith("421")
        assert await raw.closed()
        await assert_untouched(live, t, 100)


async def test_connections_per_address_are_limited(db_dsn, store, peer) -> None:
    async with running(db_dsn, store, peer, max_connections_per_address=3) as live:
        t = await live.tenant()
        held = [await Raw.open(live.port) for _ in range(3)]
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        extra = Raw(reader, writer)
        greeting = await extra.reply()
        assert greeting.startswith("421 4.7.0") and "Too many connections" in greeting
        assert await extra.closed()
        held.pop().close()
        # once one closes, a new connection is served (the slot comes back)
        async def served() -> bool:
            raw = await Raw.open(live.port)
            ok = (await raw.cmd("EHLO client.test")).startswith("250")
            raw.close()
            return ok
        from tests.conftest import eventually
        await eventually(served, what="a freed slot is reused")
        for raw in held:
            raw.close()
        await assert_untouched(live, t, 100)
