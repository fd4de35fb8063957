"""Idempotency over SMTP: an Idempotency-Key: message header, honoured per account for 24 hours."""

from __future__ import annotations

import asyncio
import uuid

import aiosmtplib
import pytest

from tests.conftest import assert_untouched
from tests.smtp_helpers import message, send

KEY = "Idempotency-Key: order-4711\r\n"


async def test_repeat_returns_original_without_sending_or_charging(relay) -> None:
    t = await relay.tenant(credits=10)
    data = message(t.sender, extra_headers=KEY)
    first = await send(relay.port, t.key, t.sender, ["a@dest.test"], data)
    again = await send(relay.port, t.key, t.sender, ["a@dest.test"], data)
    assert first.message.startswith("OK: ") and again.message == first.message
    assert len(relay.peer.messages) == 1
    assert b"Idempotency-Key" not in relay.peer.messages[0].data  # removed before relaying
    assert await relay.balance(t) == 9
    assert len(await relay.store.logs()) == 1


async def test_same_key_other_payload_is_550(relay) -> None:
    t = await relay.tenant(credits=10)
    await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender, extra_headers=KEY))
    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
        await send(relay.port, t.key, t.sender, ["b@dest.test"], message(t.sender, extra_headers=KEY))
    assert caught.value.code == 550 and "Idempotency-Key" in caught.value.message
    assert len(relay.peer.messages) == 1 and await relay.balance(t) == 9


async def test_keys_are_per_account(relay) -> None:
    one, two = await relay.tenant(credits=10), await relay.tenant(credits=10, sender="app@example.org")
    for t in (one, two):
        reply = await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender, extra_headers=KEY))
        assert reply.message.startswith("OK: ")
    assert len(relay.peer.messages) == 2


async def test_concurrent_duplicates_send_once(relay) -> None:
    t = await relay.tenant(credits=10)
    relay.peer.handler.data_delay = 0.5
    data = message(t.sender, extra_headers=KEY)

    async def one() -> str:
        try:
            return (await send(relay.port, t.key, t.sender, ["a@dest.test"], data)).message
        except aiosmtplib.SMTPResponseException as exc:
            return str(exc.code)

    results = await asyncio.gather(*(one() for _ in range(5)))
    sent = [r for r in results if r.startswith("OK: ")]
    assert len(sent) == 1 and sorted(set(results) - set(sent)) == ["451"]
    assert len(relay.peer.messages) == 1 and await relay.balance(t) == 9
    # once settled, a repeat gets the original answer
    assert (await send(relay.port, t.key, t.sender, ["a@dest.test"], data)).message == sent[0]


async def test_transient_failure_releases_the_key(relay) -> None:
    t = await relay.tenant(credits=10)
    data = message(t.sender, extra_headers=KEY)
    relay.peer.handler.mail_reply = "451 4.3.0 try later"
    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
        await send(relay.port, t.key, t.sender, ["a@dest.test"], data)
    assert caught.value.code == 451
    relay.peer.handler.mail_reply = None
    reply = await send(relay.port, t.key, t.sender, ["a@dest.test"], data)  # the retry really sends
    assert reply.message.startswith("OK: ")
    assert len(relay.peer.messages) == 1 and await relay.balance(t) == 9


async def test_permanent_failure_is_replayed_not_resent(relay) -> None:
    t = await relay.tenant(credits=10)
    data = message(t.sender, extra_headers=KEY)
    relay.peer.handler.data_reply = "550 5.1.1 User unknown"
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await send(relay.port, t.key, t.sender, ["a@dest.test"], data)
        assert caught.value.code == 550 and "User unknown" in caught.value.message
    assert len(await relay.store.logs()) == 1 and await relay.balance(t) == 10


async def test_key_older_than_24_hours_is_forgotten(relay) -> None:
    t = await relay.tenant(credits=10)
    data = message(t.sender, extra_headers=KEY)
    first = await send(relay.port, t.key, t.sender, ["a@dest.test"], data)
    async with relay.store.pool.acquire() as conn:
        await conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    second = await send(relay.port, t.key, t.sender, ["a@dest.test"], data)
    assert second.message != first.message and len(relay.peer.messages) == 2
    assert uuid.UUID(second.message.removeprefix("OK: "))


@pytest.mark.parametrize("value", [b"x" * 256, "caf\u00e9-order".encode(), b"order\t4711", b"k\xff", b" "])
async def test_unusable_key_is_550_5_6_0_and_nothing_charged(relay, value: bytes) -> None:
    """Too long, non-ASCII, a control character, undecodable, blank: refused as the API refuses
    them, not relayed without the protection the client asked for."""
    t = await relay.tenant(credits=10)
    data = message(t.sender).replace(b"Subject:", b"Idempotency-Key: " + value + b"\r\nSubject:")
    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
        await send(relay.port, t.key, t.sender, ["a@dest.test"], data)
    assert caught.value.code == 550 and caught.value.message.startswith("5.6.0 Idempotency-Key")
    await assert_untouched(relay, t, 10)
    assert await relay.store.logs(account_id=t.account_id) == []
