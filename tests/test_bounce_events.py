"""Bounces end to end (SPEC.md 'Bounces, complaints and auto-replies'): the relay sends with a VERP
envelope sender, real-world DSN/ARF/auto-reply messages come back to the inbound listener over SMTP,
and become events and suppressions; credits never move, nothing is ever sent back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from relay.bounces import token
from tests.conftest import KEY_SECRET, LiveRelay, Tenant, relay_config, start_relay

DATA = Path(__file__).parent / "data" / "bounces"
DOMAIN = "bounces.relay.test"


@pytest.fixture
async def live(db_dsn, store, peer) -> AsyncIterator[LiveRelay]:
    cfg = relay_config(db_dsn, peer.url, bounces={"domain": DOMAIN},
                       inbound={"listen": "127.0.0.1:0", "allow_private_targets": True})
    relay = await start_relay(cfg, store, peer)
    try:
        yield relay
    finally:
        await relay.server.stop(grace=1)


async def send_api(live: LiveRelay, t: Tenant, to: list[str]) -> uuid.UUID:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{live.server.port('http')}") as http:
        r = await http.post("/v1/send", headers={"Authorization": f"Bearer {t.key}"},
                            json={"from": t.sender, "to": to, "subject": "s", "text": "hi"})
    assert r.status_code == 200, r.text
    return uuid.UUID(r.json()["messageId"])


async def bounce_back(live: LiveRelay, rcpt: str, data: bytes) -> tuple[int, str]:
    """What a remote MTA does: MAIL FROM:<>, RCPT TO the bounce address, DATA; the DATA reply."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=live.server.port("inbound"), start_tls=False, timeout=10,
                             local_hostname="mx.remote.test")
    await client.connect()
    try:
        await client.mail("")
        await client.rcpt(rcpt)
        reply = await client.data(data)
        return reply.code, reply.message
    except aiosmtplib.SMTPDataError as exc:
        return exc.code, exc.message
    finally:
        client.close()


async def bounce_to_many(live: LiveRelay, rcpts: list[str], data: bytes) -> int:
    """One transaction to several bounce addresses; the DATA reply's code."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=live.server.port("inbound"), start_tls=False, timeout=10,
                             local_hostname="mx.remote.test")
    await client.connect()
    try:
        await client.mail("")
        for rcpt in rcpts:
            await client.rcpt(rcpt)
        return (await client.data(data)).code
    finally:
        client.close()


def counted(result: str) -> float:
    return REGISTRY.get_sample_value("relay_bounce_messages_total", {"result": result}) or 0.0


def sample(name: str, recipient: str | None = None, original: str | None = None) -> bytes:
    text = (DATA / name).read_bytes()
    if recipient and original:
        text = text.replace(original.encode(), recipient.encode())
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def test_each_recipient_gets_its_own_verp_envelope_sender(live) -> None:
    t = await live.tenant(credits=10)
    mid = await send_api(live, t, ["alice@example.com"])
    [got] = live.peer.messages
    assert token.parse(got.mail_from, DOMAIN, KEY_SECRET) == (mid, 0)
    assert f"From: {t.sender}".encode() in got.data  # the From: header is untouched
    two = await send_api(live, t, ["a@example.com", "b@example.com"])
    per_recipient = {m.recipients[0]: token.parse(m.mail_from, DOMAIN, KEY_SECRET) for m in live.peer.messages[1:]}
    assert per_recipient == {"a@example.com": (two, 0), "b@example.com": (two, 1)}
    assert await live.balance(t) == 7
    row = await live.store.message_with_details(two)
    assert row is not None and row["status"] == "sent" and row["credits_refunded"] == 0


async def test_one_refused_recipient_of_several_is_refunded_alone(live) -> None:
    t = await live.tenant(credits=10)
    live.peer.handler.rcpt_replies["gone@example.com"] = "550 5.1.1 no such user"
    mid = await send_api(live, t, ["ok@example.com", "gone@example.com"])
    row = await live.store.message_with_details(mid)
    assert row is not None and row["credits_refunded"] == 1 and await live.balance(t) == 9
    assert row["recipients"] == [{"address": "ok@example.com", "status": "sent"},
                                 {"address": "gone@example.com", "status": "failed"}]


async def test_a_bounce_is_attributed_to_the_recipient_its_token_names(live) -> None:
    t = await live.tenant(credits=10)
    mid = await send_api(live, t, ["x@example.com", "alice@example.com"])
    alices = next(m.mail_from for m in live.peer.messages if m.recipients == ["alice@example.com"])
    assert (await bounce_back(live, alices, sample("postfix-user-unknown.eml")))[0] == 250
    bounced = [e["recipient"] for e in await live.store.events(mid) if e["type"] == "email.bounced"]
    assert bounced == ["alice@example.com"]


async def test_a_hard_bounce_is_an_event_a_suppression_and_no_refund(live) -> None:
    t = await live.tenant(credits=10)
    mid = await send_api(live, t, ["alice@example.com"])
    verp = live.peer.messages[0].mail_from
    code, _ = await bounce_back(live, verp, sample("postfix-user-unknown.eml"))
    assert code == 250
    events = await live.store.events(mid)
    bounced = [e for e in events if e["type"] == "email.bounced"]
    assert [(e["recipient"], e["data"]["failureCode"]) for e in bounced] == [("alice@example.com", 2001)]
    row = await live.store.message_with_details(mid)
    assert row is not None and row["recipients"] == [{"address": "alice@example.com", "status": "bounced"}]
    assert row["status"] == "sent" and row["credits_refunded"] == 0 and await live.balance(t) == 9
    assert [(s["address"], s["reason"], s["message_id"]) for s in await live.store.suppressions(t.account_id)] == [
        ("alice@example.com", "hard_bounce", mid)]
    assert len(live.peer.messages) == 1  # nothing was sent back: no backscatter


async def test_a_multi_recipient_dsn_to_a_whole_message_token_is_one_event_per_failed_block(live) -> None:
    """The queue relays a message in one transaction with a token naming the whole message."""
    from relay.events.bounce_intake import envelope_sender

    t = await live.tenant(credits=10)
    to = ["carol@example.org", "dan@nowhere.example", "erin@example.org"]
    mid = await send_api(live, t, to)
    whole = envelope_sender(mid, None, KEY_SECRET, DOMAIN)
    code, _ = await bounce_back(live, whole, sample("postfix-multi-recipient.eml"))
    assert code == 250
    bounced = {e["recipient"]: e["data"]["failureCode"] for e in await live.store.events(mid)
               if e["type"] == "email.bounced"}
    assert set(bounced) == {"carol@example.org", "dan@nowhere.example"}  # erin's block says delivered
    assert await live.balance(t) == 7


async def test_a_whole_message_dsn_naming_a_stranger_is_dropped(live) -> None:
    """A whole-message token proves the message, not the address: a forged DSN naming an address
    the message was not sent to must not suppress it; one naming a real recipient still counts."""
    from relay.events.bounce_intake import envelope_sender

    t = await live.tenant(credits=10)
    mid = await send_api(live, t, ["alice@example.com"])
    whole = envelope_sender(mid, None, KEY_SECRET, DOMAIN)
    forged = sample("postfix-user-unknown.eml", "victim@example.net", "alice@example.com")
    assert (await bounce_back(live, whole, forged))[0] == 250
    assert [e["type"] for e in await live.store.events(mid)] == ["email.sent"]
    assert await live.store.suppressions(t.account_id) == []
    real = sample("postfix-user-unknown.eml", "ALICE@example.com", "alice@example.com")
    assert (await bounce_back(live, whole, real))[0] == 250
    assert [(e["type"], e["recipient"]) for e in await live.store.events(mid)] == [
        ("email.sent", None), ("email.bounced", "alice@example.com")]
    assert [(s["address"], s["reason"]) for s in await live.store.suppressions(t.account_id)] == [
        ("alice@example.com", "hard_bounce")]
    assert await live.balance(t) == 9 and len(live.peer.messages) == 1
    # a position names its recipient alone: no falling back to the report's address
    assert not await live.store.record_bounce(mid, 5, "victim@example.net", "email.bounced", {}, "hard_bounce")
    assert len(await live.store.events(mid)) == 2 and len(await live.store.suppressions(t.account_id)) == 1


async def test_complaint_delay_and_auto_reply(live) -> None:
    t = await live.tenant(credits=10)
    mid = await send_api(live, t, ["brett@example.com"])
    verp = live.peer.messages[0].mail_from
    for name in ("arf-rfc5965.eml", "postfix-delayed.eml", "autoreply-gmail-vacation.eml"):
        assert (await bounce_back(live, verp, sample(name)))[0] == 250
    types = [(e["type"], e["recipient"]) for e in await live.store.events(mid)]
    assert ("email.complained", "brett@example.com") in types
    assert ("email.delivery_delayed", "brett@example.com") in types
    auto = [e for e in await live.store.events(mid) if e["type"] == "email.auto_replied"]
    assert auto and auto[0]["data"]["failureCode"] == 5001
    assert [(s["address"], s["reason"]) for s in await live.store.suppressions(t.account_id)] == [
        ("brett@example.com", "complaint")]
    assert await live.balance(t) == 9


async def test_a_forged_or_foreign_bounce_address_is_accepted_and_dropped(live) -> None:
    t = await live.tenant(credits=10)
    mid = await send_api(live, t, ["alice@example.com"])
    real = live.peer.messages[0].mail_from
    forged = real[:10] + ("a" if real[10] != "a" else "b") + real[11:]
    for rcpt in (forged, f"postmaster@{DOMAIN}", f"b+nonsense@{DOMAIN}"):
        assert (await bounce_back(live, rcpt, sample("postfix-user-unknown.eml")))[0] == 250
    assert [e["type"] for e in await live.store.events(mid)] == ["email.sent"]
    assert await live.store.suppressions(t.account_id) == []


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the messages the bounce parser was given (the real parser runs)."""
    from relay.bounces import parse

    real, sizes = parse.parse, []

    def counting(raw: bytes) -> list[parse.Finding]:
        sizes.append(len(raw))
        return real(raw)

    monkeypatch.setattr(parse, "parse", counting)
    return sizes


async def test_a_message_to_forged_bounce_addresses_is_never_parsed(live, parses: list[int]) -> None:
    """The token is checked first: a message to many forged addresses costs no parse at all."""
    t = await live.tenant(credits=10)
    mid = await send_api(live, t, ["alice@example.com"])
    real = live.peer.messages[0].mail_from
    forged = [real[:10] + ("a" if real[10] != "a" else "b") + real[11:]] + [f"b+x{i}@{DOMAIN}" for i in range(30)]
    untied = counted("untied")
    assert await bounce_to_many(live, forged, sample("postfix-user-unknown.eml")) == 250
    assert parses == [] and counted("untied") - untied == len(forged)
    assert [e["type"] for e in await live.store.events(mid)] == ["email.sent"]
    assert await live.store.suppressions(t.account_id) == []


async def test_one_bounce_to_several_tokens_is_parsed_once_and_recorded_per_token(live, parses: list[int]) -> None:
    t = await live.tenant(credits=10)
    mid = await send_api(live, t, ["a@example.com", "b@example.com"])
    tokens = [m.mail_from for m in live.peer.messages]
    recorded, untied = counted("recorded"), counted("untied")
    assert await bounce_to_many(live, [*tokens, f"b+forged@{DOMAIN}"], sample("postfix-user-unknown.eml")) == 250
    bounced = sorted(e["recipient"] for e in await live.store.events(mid) if e["type"] == "email.bounced")
    assert bounced == ["a@example.com", "b@example.com"]
    assert len(parses) == 1 and counted("recorded") - recorded == 2 and counted("untied") - untied == 1
    assert len(live.peer.messages) == 2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000))
async def test_any_bytes_to_a_bounce_address_are_250_or_550_never_an_error(live, data: bytes) -> None:
    t = live.tenants[0] if live.tenants else await live.tenant(credits=1000)
    if not live.peer.messages:
        await send_api(live, t, ["alice@example.com"])
    verp = live.peer.messages[0].mail_from
    code, _ = await bounce_back(live, verp, data)
    assert code in (250, 550)
    assert len(live.peer.messages) == 1


def test_per_recipient_answers_combine_into_one_delivery() -> None:
    from relay.events.verp import combine
    from relay.upstream.base import Delivery, Verdict

    ok = Delivery(Verdict.SENT, "250 ok")
    no = Delivery(Verdict.PERMANENT, "550 no such user", 2001)
    later = Delivery(Verdict.TRANSIENT, "451 try later", 3999)
    assert combine(["a", "b"], [ok, ok]) == Delivery(Verdict.SENT, "250 ok")
    assert combine(["a", "b", "c"], [no, ok, later]) == Delivery(Verdict.SENT, "250 ok", refused=("a", "c"))
    assert combine(["a", "b"], [no, later]) == later  # the client may retry the whole message
    assert combine(["a", "b"], [no, no]) == no
