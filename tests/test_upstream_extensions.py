"""8BITMIME and SMTPUTF8 to the upstream (issue 16): passed on when the message needs them, a
permanent failure that names what is lacking (and sends nothing) where the upstream lacks them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.upstream.base import Delivery, Extension, Verdict
from relay.upstream.classify import FailureCode
from relay.upstream.maildir import MaildirUpstream
from relay.upstream.smtp import SmtpUpstream
from tests.peer import Peer

ASCII = b"From: app@example.com\r\nTo: a@example.net\r\nSubject: hi\r\n\r\nhello\r\n"
EIGHT_BIT = ("From: app@example.com\r\nTo: a@example.net\r\nSubject: hi\r\n"
             "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
             "caf\u00e9 cr\u00e8me\r\n").encode()
UTF8_RCPT = "j\u00f6rg@b\u00fccher.example"


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
async def pipelining(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


async def _peer(pipelining: bool, **kwargs: object) -> Peer:
    peer = await Peer(**kwargs).start()  # type: ignore[arg-type]
    peer.handler.pipelining = pipelining
    return peer


@pytest.fixture
async def plain_peer(pipelining: bool) -> AsyncIterator[Peer]:
    """aiosmtpd's defaults: 8BITMIME offered, SMTPUTF8 not."""
    peer = await _peer(pipelining)
    yield peer
    await peer.stop()


@pytest.fixture
async def utf8_peer(pipelining: bool) -> AsyncIterator[Peer]:
    peer = await _peer(pipelining, smtputf8=True)
    yield peer
    await peer.stop()


async def _send(peer: Peer, recipients: list[str], data: bytes, mail_from: str = "app@example.com",
                **flags: bool) -> tuple[Delivery, SmtpUpstream]:
    upstream = SmtpUpstream(peer.url, timeout=5)
    return await upstream.deliver(mail_from, recipients, data, crlf_verified=True, **flags), upstream


async def _next_one_goes_through_the_same_connection(upstream: SmtpUpstream, peer: Peer) -> None:
    try:
        delivery = await upstream.deliver("app@example.com", ["z@example.net"], ASCII, crlf_verified=True)
        assert delivery.verdict is Verdict.SENT
        assert peer.messages[-1].recipients == ["z@example.net"] and peer.handler.connections == 1
    finally:
        await upstream.close()


async def test_a_7bit_ascii_message_says_neither(plain_peer: Peer) -> None:
    delivery, upstream = await _send(plain_peer, ["a@example.net"], ASCII)
    await upstream.close()
    assert delivery.verdict is Verdict.SENT and delivery.lacking is None
    [got] = plain_peer.messages
    assert got.mail_options == []  # as before issue 16: no BODY=, no SMTPUTF8


async def test_8bit_content_goes_with_body_8bitmime(plain_peer: Peer) -> None:
    """Found in the data itself (a byte above 127) where the caller does not say: the queue passes no flags."""
    delivery, upstream = await _send(plain_peer, ["a@example.net"], EIGHT_BIT)
    await upstream.close()
    assert delivery.verdict is Verdict.SENT
    [got] = plain_peer.messages
    assert got.mail_options == ["BODY=8BITMIME"] and got.data == EIGHT_BIT


async def test_the_callers_body_8bit_is_passed_on(plain_peer: Peer) -> None:
    delivery, upstream = await _send(plain_peer, ["a@example.net"], ASCII, body_8bit=True)
    await upstream.close()
    assert delivery.verdict is Verdict.SENT
    assert plain_peer.messages[0].mail_options == ["BODY=8BITMIME"]


async def test_a_caller_that_says_7bit_is_believed(plain_peer: Peer) -> None:
    """body_8bit=False: the caller looked already (the data is not searched again)."""
    delivery, upstream = await _send(plain_peer, ["a@example.net"], EIGHT_BIT, body_8bit=False)
    await upstream.close()
    assert delivery.verdict is Verdict.SENT
    assert plain_peer.messages[0].mail_options == []


async def test_8bit_content_to_an_upstream_without_8bitmime_is_refused_for_good(plain_peer: Peer) -> None:
    plain_peer.handler.eightbitmime = False
    delivery, upstream = await _send(plain_peer, ["a@example.net"], EIGHT_BIT)
    assert delivery.verdict is Verdict.PERMANENT and delivery.lacking is Extension.EIGHTBITMIME
    assert delivery.reply.startswith("554 5.6.3 ") and "8BITMIME" in delivery.reply
    assert delivery.failure_code == int(FailureCode.REJECTED_OTHER)
    assert plain_peer.messages == [] and plain_peer.handler.mail_options == []  # not even a MAIL
    await _next_one_goes_through_the_same_connection(upstream, plain_peer)


async def test_a_utf8_envelope_goes_with_smtputf8(utf8_peer: Peer) -> None:
    delivery, upstream = await _send(utf8_peer, [UTF8_RCPT, "a@example.net"], EIGHT_BIT,
                                     mail_from="b\u00e9b\u00e9@example.com")
    await upstream.close()
    assert delivery.verdict is Verdict.SENT and delivery.refused == ()
    [got] = utf8_peer.messages
    assert got.mail_from == "b\u00e9b\u00e9@example.com" and got.recipients == [UTF8_RCPT, "a@example.net"]
    assert got.mail_options == ["BODY=8BITMIME", "SMTPUTF8"] and got.data == EIGHT_BIT


async def test_the_callers_smtputf8_is_passed_on_with_an_ascii_envelope(utf8_peer: Peer) -> None:
    """UTF-8 in the headers only: the envelope alone does not show it, the caller says it."""
    delivery, upstream = await _send(utf8_peer, ["a@example.net"], ASCII, smtputf8=True)
    await upstream.close()
    assert delivery.verdict is Verdict.SENT
    assert utf8_peer.messages[0].mail_options == ["SMTPUTF8"]


@pytest.mark.parametrize("case", ["utf-8 recipient", "utf-8 sender", "caller says so"])
async def test_smtputf8_needed_and_not_offered_is_a_permanent_553_5_6_7(plain_peer: Peer, case: str) -> None:
    recipients, mail_from, flags = ["a@example.net"], "app@example.com", {}
    if case == "utf-8 recipient":
        recipients = ["a@example.net", UTF8_RCPT]
    elif case == "utf-8 sender":
        mail_from = "b\u00e9b\u00e9@example.com"
    else:
        flags = {"smtputf8": True}
    delivery, upstream = await _send(plain_peer, recipients, ASCII, mail_from=mail_from, **flags)
    assert delivery.verdict is Verdict.PERMANENT and delivery.lacking is Extension.SMTPUTF8
    assert delivery.reply.startswith("553 5.6.7 ") and "SMTPUTF8" in delivery.reply
    assert delivery.failure_code == int(FailureCode.ADDRESS_OTHER)
    assert plain_peer.messages == [] and plain_peer.handler.mail_options == []  # nothing said at all
    await _next_one_goes_through_the_same_connection(upstream, plain_peer)


async def test_smtputf8_is_judged_before_8bitmime(plain_peer: Peer) -> None:
    """A message lacking both gets the SMTPUTF8 answer, the one RFC 6531 asks for."""
    plain_peer.handler.eightbitmime = False
    delivery, upstream = await _send(plain_peer, [UTF8_RCPT], EIGHT_BIT)
    await upstream.close()
    assert delivery.lacking is Extension.SMTPUTF8


async def test_other_refusals_do_not_claim_a_lacking_extension(utf8_peer: Peer) -> None:
    utf8_peer.handler.rcpt_replies[UTF8_RCPT] = "553 5.1.3 bad address"
    delivery, upstream = await _send(utf8_peer, [UTF8_RCPT], EIGHT_BIT)
    await upstream.close()
    assert delivery.verdict is Verdict.PERMANENT and delivery.lacking is None
    assert delivery.reply == "553 5.1.3 bad address"


async def test_the_maildir_takes_both_as_they_are(tmp_path: Path) -> None:
    maildir = MaildirUpstream(tmp_path / "box")
    delivery = await maildir.deliver("b\u00e9b\u00e9@example.com", [UTF8_RCPT], EIGHT_BIT, crlf_verified=True,
                                     body_8bit=True, smtputf8=True)
    assert delivery.verdict is Verdict.SENT and delivery.lacking is None
    [stored] = list((tmp_path / "box" / "new").iterdir())
    content = await asyncio.to_thread(stored.read_bytes)
    assert content.endswith(EIGHT_BIT)
    assert "Return-Path: <b\u00e9b\u00e9@example.com>\r\n".encode() in content  # the UTF-8 envelope, as is
    assert UTF8_RCPT.encode() not in content  # not in To:/Cc:, so X-Original-To does not reveal it
