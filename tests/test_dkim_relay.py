"""Mail relayed for a sending domain arrives DKIM-signed, on every path: SMTP, HTTP and the queue.

Real clients (smtplib, httpx) send through a live relay to the recording peer; dkimpy verifies what
the peer got against the key records the relay printed for the domain.
"""

from __future__ import annotations

import asyncio
import smtplib
from datetime import timedelta
from email.message import EmailMessage

import dkim

from relay.dkim import keys, records, service
from relay.dkim.model import SendingDomain
from relay.queue import QueueWorker
from tests.conftest import LiveRelay, Tenant
from tests.dkim_helpers import verify_all
from tests.http_helpers import body_for, serve_api


def published(domain: SendingDomain) -> dict[bytes, bytes]:
    """What DNS would answer for each selector of the domain, as the relay tells the operator to publish."""
    return {(records.dkim_name(domain.domain, k.selector) + ".").encode():
            records.dkim_value(keys.key_type(k.algorithm), k.public_key).encode() for k in domain.keys}


async def add_domain(relay: LiveRelay, tenant: Tenant, name: str = "example.com", **options: bool) -> SendingDomain:
    options.setdefault("trust", True)
    return await service.add(relay.store, relay.cfg, relay.server.key_secret, tenant.account_id, name, **options)


def smtp_send(port: int, key: str, msg: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
        client.login("app", key)
        client.send_message(msg)


def eight_bit_message(sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"App <{sender}>"
    msg["To"] = ", ".join(f"Recipient Number {i} <r{i}@dest.test>" for i in range(4))  # folded
    msg["Subject"] = "Grüße, a subject long enough to be folded by the generator over more lines than one"
    msg.set_content(".leading dot\n..two dots\n.\nGrüße aus Köln\n", cte="8bit")
    msg.add_attachment(bytes(range(256)) * 40, maintype="application", subtype="octet-stream", filename="a.bin")
    return msg


def signature_count(data: bytes) -> int:
    return sum(1 for name, _ in dkim.DKIM(data).headers if name.lower() == b"dkim-signature")


async def test_smtp_send_is_signed_and_verifies(relay: LiveRelay) -> None:
    tenant = await relay.tenant()
    domain = await add_domain(relay, tenant, ed25519=True)
    msg = eight_bit_message(tenant.sender)  # no Message-ID or Date: the relay adds them, then signs
    await asyncio.to_thread(smtp_send, relay.port, tenant.key, msg)
    [got] = relay.peer.messages
    assert verify_all(got.data, published(domain)) == [True, True]
    head = got.data.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"DKIM-Signature:") and b"\r\nReceived:" in head and b"\r\nMessage-ID:" in head
    assert b"message-id" in head.split(b"\r\nReceived:")[0]  # the relay's own Message-ID is signed
    tampered = got.data.replace(b"two dots", b"2 dots")
    assert verify_all(tampered, published(domain)) == [False, False]


async def test_http_send_is_signed_and_verifies(relay: LiveRelay) -> None:
    tenant = await relay.tenant()
    domain = await add_domain(relay, tenant)
    async with serve_api(relay) as api:
        response = await api.send(tenant.key, body_for(tenant, html="<p>Hello  <b>there</b></p>\n\n",
                                                       text="Hello there\n.\n", subject="Grüße",
                                                       headers={"List-Unsubscribe": "<mailto:u@example.com>"}))
        assert response.status_code == 200, response.text
    [got] = relay.peer.messages
    assert verify_all(got.data, published(domain)) == [True]
    assert b"list-unsubscribe" in got.data.split(b"\r\n\r\n", 1)[0].lower().split(b"bh=")[0]


async def test_queued_message_is_signed_when_delivered(relay: LiveRelay) -> None:
    tenant = await relay.tenant(daily_cap=0)
    domain = await add_domain(relay, tenant)
    msg = eight_bit_message(tenant.sender)
    await asyncio.to_thread(smtp_send, relay.port, tenant.key, msg)
    assert relay.peer.messages == []
    row = await relay.store.pool.fetchrow("SELECT id, deliver_after FROM messages WHERE status = 'queued'")
    stored = await relay.store.pool.fetchval("SELECT data FROM queued_bodies WHERE message_id = $1", row["id"])
    assert not bytes(stored).startswith(b"DKIM-Signature:")  # signed on the way out, not when stored
    after_turn = row["deliver_after"] + timedelta(minutes=1)
    worker = QueueWorker(relay.store, relay.server.upstream, relay.cfg.limits, relay.cfg.queue, lambda: after_turn)
    assert (await worker.deliver_due()).sent == 1
    [got] = relay.peer.messages
    assert verify_all(got.data, published(domain)) == [True]


async def test_unverified_domain_is_not_signed_until_verified(relay: LiveRelay) -> None:
    tenant = await relay.tenant()
    domain = await add_domain(relay, tenant, trust=False)
    assert not domain.signing
    msg = eight_bit_message(tenant.sender)
    await asyncio.to_thread(smtp_send, relay.port, tenant.key, msg)
    assert signature_count(relay.peer.messages[0].data) == 0
    await relay.store.record_check(domain.domain, domain.keys[0].selector, True, "the published key is ours")
    relay.server.signer.ring.invalidate()
    await asyncio.to_thread(smtp_send, relay.port, tenant.key, msg)
    assert verify_all(relay.peer.messages[1].data, published(domain)) == [True]


async def test_other_domains_and_subdomains(relay: LiveRelay) -> None:
    tenant = await relay.tenant(sender="mail.example.com", extra_senders=("other.test",))
    domain = await add_domain(relay, tenant)
    for sender in ("news@mail.example.com", "app@other.test"):
        msg = eight_bit_message(sender)
        await asyncio.to_thread(smtp_send, relay.port, tenant.key, msg)
    signed_sub, unsigned = relay.peer.messages
    assert verify_all(signed_sub.data, published(domain)) == [True]  # d=example.com: DMARC relaxed alignment
    assert b"d=example.com;" in signed_sub.data.split(b"\r\n\r\n")[0]
    assert signature_count(unsigned.data) == 0


async def test_rotation_switches_after_verification_and_keeps_the_old_key(relay: LiveRelay) -> None:
    tenant = await relay.tenant()
    domain = await add_domain(relay, tenant, selector="old", trust=False)
    await relay.store.record_check(domain.domain, "old", True, "ok")
    rotated = await service.rotate(relay.store, relay.cfg, relay.server.key_secret,
                                   await relay.store.find_domain(domain.domain), selector="new")
    assert [(k.selector, k.active, k.status) for k in rotated.keys] == [("old", True, "verified"),
                                                                        ("new", False, "pending")]
    relay.server.signer.ring.invalidate()
    await asyncio.to_thread(smtp_send, relay.port, tenant.key, eight_bit_message(tenant.sender))
    assert b"s=old;" in relay.peer.messages[0].data.split(b"\r\n\r\n")[0]
    await relay.store.record_check(domain.domain, "new", True, "ok")
    relay.server.signer.ring.invalidate()
    await asyncio.to_thread(smtp_send, relay.port, tenant.key, eight_bit_message(tenant.sender))
    switched = await relay.store.find_domain(domain.domain)
    assert [(k.selector, k.active) for k in switched.keys] == [("old", False), ("new", True)]
    assert b"s=new;" in relay.peer.messages[1].data.split(b"\r\n\r\n")[0]
    assert verify_all(relay.peer.messages[1].data, published(switched)) == [True]
