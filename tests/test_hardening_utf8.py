"""Issue 16, channel side of SMTPUTF8 (RFC 6531) and 8BITMIME (RFC 6152): offered, accepted,
internationalized addresses matched as senders, and the flags carried to the upstream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx

from relay.server import RelayServer
from relay.upstream.base import Delivery
from relay.upstream.maildir import MaildirUpstream
from tests.conftest import KEY_SECRET, LiveRelay, assert_untouched, relay_config
from tests.smtp_helpers import Raw


class RecordingMaildir(MaildirUpstream):
    """The real dev upstream, also noting the flags each delivery came with."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.flags: list[dict[str, bool]] = []

    async def deliver(self, mail_from: str, recipients: Sequence[str], data: bytes | bytearray, *,
                      crlf_verified: bool = False, dot_free: bool = False,
                      body_8bit: bool = False, smtputf8: bool = False) -> Delivery:
        self.flags.append({"body_8bit": body_8bit, "smtputf8": smtputf8})
        return await super().deliver(mail_from, recipients, data, crlf_verified=crlf_verified,
                                     dot_free=dot_free)


@contextlib.asynccontextmanager
async def relay_to_maildir(db_dsn: str, store, peer,  # type: ignore[no-untyped-def]
                           tmp_path: Path) -> AsyncIterator[tuple[LiveRelay, RecordingMaildir]]:
    upstream = RecordingMaildir(tmp_path / "mail")
    cfg = relay_config(db_dsn, f"maildir:{tmp_path / 'mail'}")
    server = RelayServer(cfg, store, KEY_SECRET, upstream=upstream)
    await server.start()
    try:
        yield LiveRelay(server, store, cfg, peer), upstream
    finally:
        await server.stop(grace=1)


def stored(tmp_path: Path) -> list[bytes]:
    return [f.read_bytes() for f in sorted((tmp_path / "mail" / "new").iterdir())]


async def test_smtputf8_and_8bitmime_offered_accepted_and_passed_on(db_dsn, store, peer, tmp_path) -> None:
    async with relay_to_maildir(db_dsn, store, peer, tmp_path) as (live, upstream):
        t = await live.tenant(sender="müller@bücher.example")
        raw = await Raw.open(live.port)
        ehlo = await raw.auth(t.key)
        assert ehlo.startswith("235")
        ehlo = await raw.cmd("EHLO client.test")
        assert "SMTPUTF8" in ehlo and "8BITMIME" in ehlo
        # the sender as the client spells it: decomposed ü, the domain as an A-label
        sender = "mu\u0308ller@xn--bcher-kva.example"
        assert (await raw.cmd(f"MAIL FROM:<{sender}> BODY=8BITMIME SMTPUTF8")).startswith("250")
        assert (await raw.cmd("RCPT TO:<用户@例子.广告>")).startswith("250")
        assert (await raw.cmd("DATA")).startswith("354")
        data = ("From: Müller <müller@bücher.example>\r\nTo: 用户@例子.广告\r\nSubject: grüße\r\n"
                "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                "Grüße aus Köln\r\n.\r\n").encode()
        reply = await raw.cmd(data)
        assert reply.startswith("250 OK"), reply
        raw.close()
        assert upstream.flags == [{"body_8bit": True, "smtputf8": True}]
        assert "Grüße aus Köln".encode() in stored(tmp_path)[0]
        assert await live.balance(t) == 99


async def test_plain_mail_carries_no_flags(db_dsn, store, peer, tmp_path) -> None:
    async with relay_to_maildir(db_dsn, store, peer, tmp_path) as (live, upstream):
        t = await live.tenant()
        raw = await Raw.open(live.port)
        await raw.begin_data(t.key, t.sender)
        assert (await raw.cmd(f"From: {t.sender}\r\n\r\nhi\r\n.\r\n".encode())).startswith("250")
        raw.close()
        assert upstream.flags == [{"body_8bit": None, "smtputf8": False}]  # not declared: the upstream looks


async def test_utf8_address_without_smtputf8_is_553_5_6_7(db_dsn, store, peer, tmp_path) -> None:
    async with relay_to_maildir(db_dsn, store, peer, tmp_path) as (live, upstream):
        t = await live.tenant()
        raw = await Raw.open(live.port)
        assert (await raw.auth(t.key)).startswith("235")
        assert (await raw.cmd("MAIL FROM:<müller@bücher.example>")).startswith("553 5.6.7")
        assert (await raw.cmd(f"MAIL FROM:<{t.sender}>")).startswith("250")
        assert (await raw.cmd("RCPT TO:<用户@例子.广告>")).startswith("553 5.6.7")
        raw.close()
        assert upstream.flags == []
        await assert_untouched(live, t, 100)


async def test_internationalized_addresses_over_http(db_dsn, store, peer, tmp_path) -> None:
    async with relay_to_maildir(db_dsn, store, peer, tmp_path) as (live, upstream):
        t = await live.tenant(sender="bücher.example")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{live.server.port('http')}") as http:
            r = await http.post("/v1/send", headers={"Authorization": f"Bearer {t.key}"}, json={
                "from": "Müller <MÜLLER@xn--bcher-kva.example>", "to": ["用户@例子.广告"],
                "subject": "grüße", "text": "hallo"})
        assert r.status_code == 200, r.text
        assert upstream.flags == [{"body_8bit": None, "smtputf8": True}]
        message = stored(tmp_path)[0]
        assert "To: 用户@例子.广告".encode() in message


async def test_a_utf8_reply_to_alone_asks_for_smtputf8(db_dsn, store, peer, tmp_path) -> None:
    """The envelope is ASCII, but the Reply-To header goes out in UTF-8: the upstream must be told."""
    async with relay_to_maildir(db_dsn, store, peer, tmp_path) as (live, upstream):
        t = await live.tenant()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{live.server.port('http')}") as http:
            r = await http.post("/v1/send", headers={"Authorization": f"Bearer {t.key}"}, json={
                "from": t.sender, "to": ["a@dest.test"], "reply_to": "Jürgen <jürgen@bücher.example>",
                "subject": "hi", "text": "hallo"})
        assert r.status_code == 200, r.text
        assert upstream.flags == [{"body_8bit": None, "smtputf8": True}]
        assert "jürgen@".encode() in stored(tmp_path)[0]  # written in UTF-8 (RFC 6532)


async def test_upstream_without_smtputf8_is_553_5_6_7_and_refunded(relay: LiveRelay) -> None:
    # what the SMTP upstream answers for an internationalized message it cannot pass on
    relay.peer.handler.mail_reply = "553 5.6.7 SMTPUTF8 is required but was not offered"
    t = await relay.tenant()
    raw = await Raw.open(relay.port)
    await raw.begin_data(t.key, t.sender)
    reply = await raw.cmd(f"From: {t.sender}\r\n\r\nhi\r\n.\r\n".encode())
    assert reply.startswith("553 5.6.7"), reply
    raw.close()
    await assert_untouched(relay, t, 100)
