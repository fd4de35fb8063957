"""SMTP relay, every rejection and failure row of SPEC.md: exact reply, nothing relayed, no credit lost."""

from __future__ import annotations

import asyncio
import uuid

import aiosmtplib
import pytest

from relay.config import LimitsConfig
from tests.conftest import (
    assert_untouched,
    database_unreachable,
    eventually,
    lose_the_debit_race,
    relay_config,
    start_relay,
)
from tests.smtp_helpers import Raw, login, message, send


async def test_mail_before_auth_is_530(relay) -> None:
    raw = await Raw.open(relay.port)
    await raw.cmd("EHLO client.test")
    assert (await raw.cmd("MAIL FROM:<app@example.com>")).startswith("530")
    raw.close()


async def test_data_without_rcpt_is_503_bad_sequence(relay) -> None:
    t = await relay.tenant()
    raw = await Raw.open(relay.port)
    await raw.auth(t.key)
    assert (await raw.cmd("DATA")).startswith("503")  # no MAIL either
    await raw.cmd(f"MAIL FROM:<{t.sender}>")
    assert (await raw.cmd("DATA")).startswith("503 5.5.1")  # MAIL, but no RCPT tried
    assert (await raw.cmd("BOGUS")).startswith("500")
    assert (await raw.cmd("MAIL FROM")).startswith("501")
    raw.close()
    assert relay.peer.messages == [] and await relay.balance(t) == 100


async def test_invalid_key_is_535_at_auth(relay) -> None:
    t = await relay.tenant()
    for bad in ("rk_000000000000_nope", t.key + "x", "not-a-key", ""):
        raw = await Raw.open(relay.port)
        reply = await raw.auth(bad)
        assert reply.startswith("535 5.7.8"), (bad, reply)
        assert (await raw.cmd(f"MAIL FROM:<{t.sender}>")).startswith("530")
        raw.close()
    await assert_untouched(relay, t, 100)


async def test_disabled_key_is_535_at_auth(relay) -> None:
    t = await relay.tenant()
    await relay.store.set_key_enabled(t.key_id, False)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
        await login(relay.port, t.key)
    assert caught.value.code == 535 and "disabled" in caught.value.message
    await assert_untouched(relay, t, 100)


async def test_rate_limited_is_421_at_mail_then_closed(relay) -> None:
    t = await relay.tenant(rate=2)
    for _ in range(2):
        await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
    raw = await Raw.open(relay.port)
    await raw.auth(t.key)
    reply = await raw.cmd(f"MAIL FROM:<{t.sender}>")
    assert reply.startswith("421 4.7.0") and "retry in" in reply
    assert await raw.closed()
    assert len(relay.peer.messages) == 2
    assert await relay.balance(t) == 98


async def test_unauthorized_sender_is_550_at_mail(relay) -> None:
    t = await relay.tenant()
    raw = await Raw.open(relay.port)
    await raw.auth(t.key)
    assert (await raw.cmd("MAIL FROM:<other@elsewhere.test>")).startswith("550 5.7.1")
    assert (await raw.cmd("MAIL FROM:<not an address>")).startswith(("550", "553", "501"))
    raw.close()
    await assert_untouched(relay, t, 100)


async def test_invalid_recipient_is_550_at_rcpt(relay) -> None:
    t = await relay.tenant()
    raw = await Raw.open(relay.port)
    await raw.auth(t.key)
    await raw.cmd(f"MAIL FROM:<{t.sender}>")
    assert (await raw.cmd("RCPT TO:<no-domain>")).startswith("550 5.1.3")
    assert (await raw.cmd("RCPT TO:<a@b>")).startswith("550 5.1.3")
    assert (await raw.cmd("DATA")).startswith("554 5.5.1")  # SPEC: 554 no valid recipients
    raw.close()
    await assert_untouched(relay, t, 100)


async def test_101st_recipient_is_550(relay) -> None:
    t = await relay.tenant(credits=1000)
    raw = await Raw.open(relay.port)
    await raw.auth(t.key)
    await raw.cmd(f"MAIL FROM:<{t.sender}>")
    for i in range(100):
        assert (await raw.cmd(f"RCPT TO:<r{i}@dest.test>")).startswith("250")
    assert (await raw.cmd("RCPT TO:<r100@dest.test>")).startswith("550 5.5.3")
    raw.close()
    await assert_untouched(relay, t, 1000)


@pytest.mark.parametrize("from_header", ["someone@elsewhere.test", "a@evil.test)<app@example.com>", None])
async def test_from_header_not_authorized_is_550_after_data(relay, from_header) -> None:
    t = await relay.tenant()
    if from_header is None:
        data = b"To: a@dest.test\r\nSubject: no from\r\n\r\nbody\r\n"
    else:
        data = message(t.sender, from_header=from_header)
    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
        await send(relay.port, t.key, t.sender, ["a@dest.test"], data)
    assert caught.value.code == 550
    await assert_untouched(relay, t, 100)


async def test_empty_message_is_550(relay) -> None:
    t = await relay.tenant()
    raw = await Raw.open(relay.port)
    await raw.auth(t.key)
    await raw.cmd(f"MAIL FROM:<{t.sender}>")
    await raw.cmd("RCPT TO:<a@dest.test>")
    await raw.cmd("DATA")
    assert (await raw.cmd(".")).startswith("550 5.6.0")
    assert (await raw.cmd("NOOP")).startswith("250")  # the session goes on
    raw.close()
    await assert_untouched(relay, t, 100)


async def test_insufficient_credits_at_mail_from(relay) -> None:
    t = await relay.tenant(credits=0)
    raw = await Raw.open(relay.port)
    await raw.auth(t.key)
    assert (await raw.cmd(f"MAIL FROM:<{t.sender}>")).startswith("451 4.7.1")
    raw.close()
    await assert_untouched(relay, t, 0)


async def test_insufficient_credits_after_data(relay) -> None:
    t = await relay.tenant(credits=1)
    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
        await send(relay.port, t.key, t.sender, ["a@dest.test", "b@dest.test"], message(t.sender))
    assert caught.value.code == 451 and "insufficient credits" in caught.value.message
    await assert_untouched(relay, t, 1)
    assert await relay.store.logs() == []  # nothing charged, nothing logged


async def test_concurrent_sends_never_overspend(relay) -> None:
    t = await relay.tenant(credits=5)

    async def one(i: int) -> int:
        try:
            reply = await send(relay.port, t.key, t.sender, [f"r{i}@dest.test"], message(t.sender))
            return reply.code
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code

    codes = await asyncio.gather(*(one(i) for i in range(20)))
    assert sorted(codes) == [250] * 5 + [451] * 15
    assert len(relay.peer.messages) == 5
    assert await relay.balance(t) == 0


async def test_upstream_permanent_refusal_is_550_and_refunded(relay) -> None:
    t = await relay.tenant(credits=10)
    relay.peer.handler.data_reply = "550 5.7.1 Message rejected as spam by Content Filtering"
    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
        await send(relay.port, t.key, t.sender, ["a@dest.test", "b@dest.test"], message(t.sender))
    assert caught.value.code == 550 and "spam" in caught.value.message
    await assert_untouched(relay, t, 10)
    [row] = await relay.store.logs()
    assert row["status"] == "failed" and row["failure_code"] == 1004
    assert row["credits_charged"] == 2 and row["credits_refunded"] == 2


async def test_all_recipients_refused_is_550_and_refunded(relay) -> None:
    t = await relay.tenant(credits=10)
    relay.peer.handler.rcpt_replies["a@dest.test"] = "550 5.1.1 <a@dest.test>: User unknown"
    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
        await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
    assert caught.value.code == 550
    await assert_untouched(relay, t, 10)
    [row] = await relay.store.logs()
    assert row["failure_code"] == 2001 and row["credits_refunded"] == 1


async def test_upstream_transient_refusal_is_451_and_refunded(relay) -> None:
    t = await relay.tenant(credits=10)
    relay.peer.handler.mail_reply = "421 4.7.0 Try again later, closing connection"
    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
        await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
    assert caught.value.code == 451 and caught.value.message.startswith("4.4.1")
    await assert_untouched(relay, t, 10)
    [row] = await relay.store.logs()
    assert row["status"] == "failed" and row["failure_code"] == 4001 and row["credits_refunded"] == 1


async def test_upstream_unreachable_is_451_and_refunded(db_dsn, store, peer) -> None:
    await peer.stop()
    live = await start_relay(relay_config(db_dsn, peer.url), store, peer)
    try:
        t = await live.tenant(credits=10)
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await send(live.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
        assert caught.value.code == 451
        assert await live.balance(t) == 10
        [row] = await store.logs()
        assert row["failure_code"] == 4003 and row["credits_refunded"] == 1
    finally:
        await live.server.stop(grace=1)


async def test_upstream_timeout_is_451_and_refunded(db_dsn, store, peer) -> None:
    peer.handler.data_delay = 3
    cfg = relay_config(db_dsn, peer.url, upstream={"timeout_seconds": 0.5})
    live = await start_relay(cfg, store, peer)
    try:
        t = await live.tenant(credits=10)
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await send(live.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
        assert caught.value.code == 451
        assert await live.balance(t) == 10
        [row] = await store.logs()
        assert row["failure_code"] == 4002 and row["status"] == "failed"
    finally:
        await live.server.stop(grace=1)


async def test_size_declared_over_limit_is_550_at_mail(db_dsn, store, peer) -> None:
    cfg = relay_config(db_dsn, peer.url, limits={"max_message_bytes": 2000})
    live = await start_relay(cfg, store, peer)
    try:
        t = await live.tenant()
        raw = await Raw.open(live.port)
        ehlo = await raw.auth(t.key)
        assert ehlo.startswith("235")
        reply = await raw.cmd(f"MAIL FROM:<{t.sender}> SIZE=2001")
        assert reply.startswith("550 5.3.4"), reply
        assert (await raw.cmd(f"MAIL FROM:<{t.sender}> SIZE=2000")).startswith("250")
        raw.close()
        await assert_untouched(live, t, 100)
    finally:
        await live.server.stop(grace=1)


async def test_data_over_limit_is_550_and_session_continues(db_dsn, store, peer) -> None:
    cfg = relay_config(db_dsn, peer.url, limits={"max_message_bytes": 2000})
    live = await start_relay(cfg, store, peer)
    try:
        t = await live.tenant()
        client = await login(live.port, t.key)
        await client.mail(t.sender)
        await client.rcpt("a@dest.test")
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await client.data(message(t.sender, body="x" * 70 + "\r\n") * 40)
        assert caught.value.code == 550 and caught.value.message.startswith("5.3.4")
        reply = await client.sendmail(t.sender, ["a@dest.test"], message(t.sender))
        assert reply[1].startswith("OK: ")
        await client.quit()
        assert len(live.peer.messages) == 1
        assert await live.balance(t) == 99
    finally:
        await live.server.stop(grace=1)


async def test_stuffing_dots_do_not_count_toward_the_size_limit(db_dsn, store, peer) -> None:
    """RFC 1870: the limit is on the message, not its dot-stuffed transfer form."""
    cfg = relay_config(db_dsn, peer.url, limits={"max_message_bytes": 2000})
    live = await start_relay(cfg, store, peer)
    try:
        t = await live.tenant(credits=10)
        head = message(t.sender, body="")
        lines = b".dot\r\n" * 100  # each line is stuffed to "..dot" on the wire
        room = 2000 - len(head) - len(lines)
        pad = b"x" * 68 + b"\r\n"
        pad = pad * (room // 70) + b"x" * (room % 70 - 2) + b"\r\n"  # lines an upstream accepts
        exact = head + lines + pad
        assert len(exact) == 2000
        for data, code in ((exact, 250), (exact + b"y\r\n", 550)):
            raw = await Raw.open(live.port)
            await raw.begin_data(t.key, t.sender)
            reply = await raw.cmd(data.replace(b"\r\n.", b"\r\n..") + b".\r\n")
            assert reply.startswith(str(code)), reply
            raw.close()
        [received] = live.peer.messages
        assert received.data.endswith(lines + pad)
        assert await live.balance(t) == 9  # the refused one charged nothing
    finally:
        await live.server.stop(grace=1)


async def test_database_unreachable_is_451_and_nothing_charged(relay, pg) -> None:
    t = await relay.tenant(credits=10)
    client = await login(relay.port, t.key)
    async with database_unreachable(relay, pg.admin_dsn):
        with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
            await client.sendmail(t.sender, ["a@dest.test"], message(t.sender))
        assert caught.value.code == 451
        assert "asyncpg" not in caught.value.message and "Error" not in caught.value.message
    client.close()
    await assert_untouched(relay, t, 10)
    # The relay recovers on its own once the database is back: the next message is sent.
    client = await login(relay.port, t.key)
    reply = await client.sendmail(t.sender, ["a@dest.test"], message(t.sender))
    assert reply[1].startswith("OK: ")
    await client.quit()
    assert len(relay.peer.messages) == 1 and await relay.balance(t) == 9


def test_every_outcome_has_an_smtp_reply() -> None:
    from relay.channels.smtp import SMTP_REPLIES, smtp_reply
    from relay.outcomes import Outcome, Result

    expected = {
        "SENT": 250, "QUEUED": 250, "RATE_LIMITED": 421, "INSUFFICIENT_CREDITS": 451,
        "INSUFFICIENT_FUNDS": 451, "KEY_MISSING": 535, "KEY_INVALID": 535, "KEY_DISABLED": 535,
        "INVALID": 550, "TOO_LARGE": 550, "RELAY_FAILED": 550, "UPSTREAM_UNAVAILABLE": 451,
        "TEMPORARY": 451, "IDEMPOTENCY_MISMATCH": 550, "IDEMPOTENCY_IN_FLIGHT": 451, "SUPPRESSED": 550,
        "SCHEDULED": 250,
    }
    assert set(SMTP_REPLIES) == set(Outcome)
    for outcome in Outcome:
        line = smtp_reply(Result(outcome, message_id="m1", reason="why\r\ninjected"))
        assert int(line[:3]) == expected[outcome.name], outcome
        assert "\r" not in line and "\n" not in line
    assert smtp_reply(Result(Outcome.SENT, message_id="m1")) == "250 OK: m1"
    assert smtp_reply(Result(Outcome.QUEUED, message_id="m1")) == "250 queued: m1"


def test_limits_default_match_spec() -> None:
    limits = LimitsConfig()
    assert (limits.calls_per_minute, limits.max_recipients, limits.max_message_bytes) == (120, 100, 10485760)
    assert uuid.UUID  # the module is used above for message ids


async def test_key_disabled_after_a_cached_lookup_is_refused_at_once(relay) -> None:
    """The key lookup is cached for a second, but every MAIL FROM re-checks that the key is enabled."""
    t = await relay.tenant()
    await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender))  # caches the lookup
    await relay.store.set_key_enabled(t.key_id, False)
    raw = await Raw.open(relay.port)
    auth = await raw.auth(t.key)
    reply = auth if not auth.startswith("235") else await raw.cmd(f"MAIL FROM:<{t.sender}>")
    assert reply.startswith("535") and "disabled" in reply
    raw.close()
    assert len(relay.peer.messages) == 1 and await relay.balance(t) == 99


async def test_rotated_key_new_secret_works_at_once_old_one_stops_within_the_cache_time(relay) -> None:
    from relay import keys
    from tests.conftest import KEY_SECRET

    t = await relay.tenant()
    await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
    secret = keys.new_secret()
    await relay.store.rotate_key(t.key_id, keys.digest(KEY_SECRET, secret))
    # the old secret's lookup is still cached; the new secret is looked up afresh, not refused
    client = await login(relay.port, keys.format_key(t.key_id, secret))
    client.close()
    await asyncio.sleep(relay.cfg.server.key_cache_seconds + 0.1)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await login(relay.port, t.key)
    client = await login(relay.port, keys.format_key(t.key_id, secret))
    client.close()


def _smtp_count(outcome: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("relay_messages_total", {"channel": "smtp", "outcome": outcome}) or 0.0


async def test_rejections_decided_by_the_smtp_channel_are_counted(db_dsn, store, peer) -> None:
    """SPEC: rejections before the debit are counted in metrics, including those the channel decides."""
    cfg = relay_config(db_dsn, peer.url, limits={"max_message_bytes": 2000})
    live = await start_relay(cfg, store, peer)
    try:
        t = await live.tenant()
        invalid, too_large = _smtp_count("INVALID"), _smtp_count("TOO_LARGE")
        raw = await Raw.open(live.port)
        await raw.auth(t.key)
        assert (await raw.cmd(f"MAIL FROM:<{t.sender}> SIZE=5000")).startswith("550 5.3.4")
        await raw.cmd(f"MAIL FROM:<{t.sender}>")
        assert (await raw.cmd("RCPT TO:<nobody>")).startswith("550 5.1.3")
        await raw.cmd("RCPT TO:<a@dest.test>")
        await raw.cmd("DATA")
        assert (await raw.cmd(b"x" * 3000 + b"\r\n.\r\n")).startswith("550 5.3.4")
        await raw.cmd(f"MAIL FROM:<{t.sender}>")
        await raw.cmd("RCPT TO:<a@dest.test>")
        await raw.cmd("DATA")
        assert (await raw.cmd(b"From: " + t.sender.encode() + b"\r\n\r\nbare\nLF\r\n.\r\n")).startswith("550 5.6.11")
        raw.close()
        assert _smtp_count("TOO_LARGE") - too_large == 2
        assert _smtp_count("INVALID") - invalid == 2
        await assert_untouched(live, t, 100)
    finally:
        await live.server.stop(grace=1)


async def test_queued_body_that_cannot_be_stored_is_451_and_refunded(relay) -> None:
    """Over the cap the body must be stored before '250 queued'; if the database refuses it, refund."""
    t = await relay.tenant(credits=10, daily_cap=0)
    async with relay.store.pool.acquire() as conn:  # a real refusal from PostgreSQL, not a mock
        await conn.execute("ALTER TABLE queued_bodies ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
        await send(relay.port, t.key, t.sender, ["a@dest.test", "b@dest.test"], message(t.sender))
    assert caught.value.code == 451 and "temporary" in caught.value.message
    await assert_untouched(relay, t, 10)
    [row] = await relay.store.logs()
    assert row["status"] == "failed" and row["credits_refunded"] == row["credits_charged"] == 2
    assert await relay.store.queued() == []


async def test_client_hanging_up_mid_data_sends_and_charges_nothing(relay) -> None:
    """A connection that drops in the middle of DATA (no final dot) is not a message: nothing is
    admitted, relayed or charged, and the next client is served as usual."""
    t = await relay.tenant(credits=5)
    raw = await Raw.open(relay.port)
    await raw.begin_data(t.key, t.sender)
    raw.writer.write(message(t.sender)[:-5] + b"\r\nmore of the body, then nothing")
    await raw.writer.drain()
    raw.writer.transport.abort()
    for _ in range(250):  # until the relay has seen the connection go
        if not relay.server.channel("smtp").handler.connections:
            break
        await asyncio.sleep(0.02)
    assert not relay.server.channel("smtp").handler.connections and not relay.server.pipeline.in_flight
    assert relay.peer.messages == []
    assert await relay.balance(t) == 5
    assert await relay.store.pool.fetchval("SELECT count(*) FROM messages WHERE account_id = $1", t.account_id) == 0
    reply = await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
    assert reply.code == 250 and len(relay.peer.messages) == 1 and await relay.balance(t) == 4


@pytest.mark.parametrize("upstream", ["accepts", "refuses"])
async def test_database_lost_after_the_debit_is_told_truthfully_and_recorded_when_it_is_back(
        relay, pg, upstream: str) -> None:
    """The admit committed (debit), then the database went away while the upstream had the
    message. The reply still tells what the upstream said (250: it left; 550: it did not), and the
    outcome the finalize could not write then is written once the database is back (issue 16):
    sent and charged, or failed and refunded. The recovery sweep leaves the row alone meanwhile."""
    from relay.pipeline import recover

    t = await relay.tenant(credits=10)
    relay.peer.handler.data_delay = 1.0
    if upstream == "refuses":
        relay.peer.handler.data_reply = "550 5.1.1 no such user"
    client = await login(relay.port, t.key)
    sending = asyncio.create_task(client.sendmail(t.sender, ["a@dest.test"], message(t.sender)))
    await asyncio.wait_for(relay.peer.handler.mail_seen.wait(), 10)  # admitted and charged by now
    async with database_unreachable(relay, pg.admin_dsn):
        if upstream == "accepts":
            reply = await sending
            assert reply[1].startswith("OK: ") and len(relay.peer.messages) == 1
        else:
            with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
                await sending
            assert caught.value.code == 550 and relay.peer.messages == []
    client.close()
    assert await recover(relay.store, 0, relay.server.pipeline.unsettled) == 0  # never races the retry
    [row] = await relay.store.logs(account_id=t.account_id)
    expected = "sent" if upstream == "accepts" else "failed"

    async def recorded() -> bool:
        return (await relay.store.message(row["id"]))["status"] == expected

    await eventually(recorded, timeout=20, what=f"the {expected} outcome is recorded")
    assert await relay.balance(t) == (9 if upstream == "accepts" else 10)


async def test_losing_the_debit_race_is_451_insufficient_funds(relay) -> None:
    """MAIL FROM's pre-flight sees the last credit; by the end of DATA a concurrent spender took
    it: 451 (transient: credits may come back), nothing relayed, nothing logged, no debit."""
    t = await relay.tenant(credits=1)
    client = await login(relay.port, t.key)
    with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
        await lose_the_debit_race(relay, t, lambda: client.sendmail(t.sender, ["a@dest.test"], message(t.sender)))
    assert caught.value.code == 451 and "insufficient funds" in caught.value.message
    client.close()
    await assert_untouched(relay, t, 0)
    assert await relay.store.logs(account_id=t.account_id) == []


async def test_auth_while_the_database_is_down_is_451_and_no_strike(relay, pg) -> None:
    """A key that cannot be looked up is a temporary failure: 451, the session stays unauthenticated,
    and the outage is not counted against the client's address (more tries than the refusal limit
    leave it able to log in once the database is back)."""
    t = await relay.tenant(credits=10)
    async with database_unreachable(relay, pg.admin_dsn):
        for _ in range(relay.cfg.smtp.auth_failures_before_refusal + 1):
            raw = await Raw.open(relay.port)
            await raw.cmd("EHLO client.test")
            assert (await raw.auth(t.key)).startswith("451 4.3.0")
            assert (await raw.cmd(f"MAIL FROM:<{t.sender}>")).startswith("530")
            raw.close()
    reply = await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
    assert reply.code == 250 and len(relay.peer.messages) == 1 and await relay.balance(t) == 9


async def test_an_upstream_reply_with_a_nul_is_recorded_and_refunded(relay) -> None:
    """A NUL in the upstream's reply cannot be stored as text: it is dropped at the boundary, so the
    outcome lands (failed, refunded) instead of retrying for ever, and the client hears no NUL."""
    t = await relay.tenant(credits=10)
    relay.peer.handler.data_reply = "550 5.1.1 no\x00such user"
    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
        await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
    assert caught.value.code == 550 and "\x00" not in caught.value.message
    await assert_untouched(relay, t, 10)
    [row] = await relay.store.logs()
    assert (row["status"], row["credits_refunded"]) == ("failed", 1)
    assert row["upstream_reply"] == "550 5.1.1 no such user"
    assert relay.peer.messages == [] and relay.server.pipeline.unsettled == set()


async def test_a_long_connection_sees_a_sender_added_once_the_key_cache_is_stale(relay) -> None:
    """MAIL FROM reloads the key's lookup (senders, suppressions) beside the rate-limit call once the
    cache is older than server.key_cache_seconds: a connection outlives the cache."""
    t = await relay.tenant()
    raw = await Raw.open(relay.port)
    try:
        assert (await raw.auth(t.key)).startswith("235")
        assert (await raw.cmd("MAIL FROM:<news@example.org>")).startswith("550")  # not authorized yet
        await relay.store.add_sender(t.account_id, "news@example.org", None)

        async def authorized() -> bool:
            await raw.cmd("RSET")
            return (await raw.cmd("MAIL FROM:<news@example.org>")).startswith("250")

        await eventually(authorized, timeout=relay.cfg.server.key_cache_seconds + 5, interval=0.2)
    finally:
        raw.close()
    await assert_untouched(relay, t, 100)


async def test_every_recipient_suppressed_after_rcpt_is_550_at_data_and_free(relay) -> None:
    """The list changed between RCPT TO and DATA: relay_admit sees it, nothing leaves, nothing is charged."""
    t = await relay.tenant(credits=10)
    raw = await Raw.open(relay.port)
    try:
        await raw.begin_data(t.key, t.sender, "gone@dest.test")  # RCPT accepted: not on the list yet
        await relay.store.add_suppression(t.account_id, "gone@dest.test", "manual")
        reply = await raw.cmd(message(t.sender) + b".\r\n")
    finally:
        raw.close()
    assert reply.startswith("550 5.1.1") and "nothing was sent or charged" in reply
    await assert_untouched(relay, t, 10)
    [row] = await relay.store.logs()
    assert (row["status"], row["credits_charged"]) == ("suppressed", 0)
