"""Our upstream SMTP client against real servers: TLS both ways (asyncio and uvloop), AUTH PLAIN and
LOGIN, content that needs its line endings made CRLF, and the reply reader's limits."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trustme

from relay.upstream.base import Verdict
from relay.upstream.classify import FailureCode
from relay.upstream.client import parse_ehlo
from relay.upstream.smtp import SmtpUpstream
from relay.upstream.wire import MAX_LINE, MAX_REPLY, MalformedReply, Reply, ReplyProtocol
from tests.peer import Peer

MESSAGE = b"From: app@example.com\r\nTo: a@example.net\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def _three(upstream: SmtpUpstream) -> list[Verdict]:
    try:
        return [(await upstream.deliver("app@example.com", ["a@example.net"], MESSAGE)).verdict for _ in range(3)]
    finally:
        await upstream.close()


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_tls_to_the_upstream_verified_against_the_ca(mode: str, server_tls: ssl.SSLContext,
                                                           ca_file: str) -> None:
    implicit = mode == "implicit"
    peer = await Peer(tls=server_tls, require_starttls=not implicit, implicit_tls=implicit).start()
    scheme = "smtps" if implicit else "smtp+starttls"
    try:
        upstream = SmtpUpstream(f"{scheme}://127.0.0.1:{peer.port}", timeout=5, tls_ca_file=ca_file)
        assert await _three(upstream) == [Verdict.SENT] * 3
        assert len(peer.messages) == 3 and peer.handler.connections == 1
    finally:
        await peer.stop()


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_an_untrusted_certificate_is_a_connect_failure(mode: str, server_tls: ssl.SSLContext) -> None:
    implicit = mode == "implicit"
    peer = await Peer(tls=server_tls, require_starttls=not implicit, implicit_tls=implicit).start()
    scheme = "smtps" if implicit else "smtp+starttls"
    try:
        upstream = SmtpUpstream(f"{scheme}://127.0.0.1:{peer.port}", timeout=5)  # the system CAs only
        delivery = await upstream.deliver("app@example.com", ["a@example.net"], MESSAGE)
        await upstream.close()
        assert delivery.verdict is Verdict.TRANSIENT and "CERTIFICATE_VERIFY_FAILED" in delivery.reply
        assert delivery.failure_code == int(FailureCode.CONNECT_FAILED) and peer.messages == []
    finally:
        await peer.stop()


def test_starttls_works_on_uvloop(server_tls: ssl.SSLContext, ca_file: str) -> None:
    """relay serve runs on uvloop: its start_tls hands the same protocol object the TLS stream."""
    import uvloop

    async def scenario() -> tuple[list[Verdict], int, int]:
        peer = await Peer(tls=server_tls, require_starttls=True).start()
        try:
            upstream = SmtpUpstream(f"smtp+starttls://127.0.0.1:{peer.port}", timeout=5, tls_ca_file=ca_file)
            return await _three(upstream), len(peer.messages), peer.handler.connections
        finally:
            await peer.stop()

    assert uvloop.run(scenario()) == ([Verdict.SENT] * 3, 3, 1)


@pytest.mark.parametrize("exclude", [frozenset(), frozenset({"PLAIN"})], ids=["PLAIN", "LOGIN"])
async def test_auth_plain_or_login(exclude: frozenset[str]) -> None:
    peer = await Peer(login=("relay-user", "s3cret p\u00e4ss"), auth_exclude=exclude).start()
    try:
        upstream = SmtpUpstream(peer.url, username="relay-user", password="s3cret p\u00e4ss", timeout=5)
        assert await _three(upstream) == [Verdict.SENT] * 3
        mechanism = "LOGIN" if exclude else "PLAIN"
        assert peer.handler.logins == [(mechanism, "relay-user", "s3cret p\u00e4ss")]  # once: pooled
    finally:
        await peer.stop()


async def test_credentials_in_the_url_are_used() -> None:
    peer = await Peer(login=("u@example.com", "p:w")).start()
    try:
        upstream = SmtpUpstream(f"smtp://u%40example.com:p%3Aw@127.0.0.1:{peer.port}", timeout=5)
        assert await _three(upstream) == [Verdict.SENT] * 3
    finally:
        await peer.stop()


async def test_a_refused_login_is_transient_and_sends_nothing() -> None:
    peer = await Peer(login=("relay-user", "right")).start()
    try:
        upstream = SmtpUpstream(peer.url, username="relay-user", password="wrong", timeout=5)
        delivery = await upstream.deliver("app@example.com", ["a@example.net"], MESSAGE)
        await upstream.close()
        assert delivery.verdict is Verdict.TRANSIENT
        assert delivery.reply.startswith("upstream refused our login: 535")
        assert delivery.failure_code == int(FailureCode.SYSTEM_OTHER) and peer.messages == []
    finally:
        await peer.stop()


async def test_credentials_for_an_upstream_without_auth_are_a_connect_failure() -> None:
    peer = await Peer().start()  # offers no AUTH without TLS
    try:
        upstream = SmtpUpstream(peer.url, username="relay-user", password="x", timeout=5)
        delivery = await upstream.deliver("app@example.com", ["a@example.net"], MESSAGE)
        await upstream.close()
        assert delivery.verdict is Verdict.TRANSIENT and "does not offer AUTH" in delivery.reply
        assert peer.messages == []
    finally:
        await peer.stop()


@pytest.mark.parametrize(("data", "sent"), [
    (b"Subject: x\r\n\r\na\nb\rc\r\n", b"Subject: x\r\n\r\na\r\nb\r\nc\r\n"),
    (b"Subject: x\n\n.\nafter a lone dot\n", b"Subject: x\r\n\r\n.\r\nafter a lone dot\r\n"),
    (b"Subject: x\r\n\r\nno final line end", b"Subject: x\r\n\r\nno final line end\r\n"),
])
async def test_unverified_content_gets_crlf_line_endings(data: bytes, sent: bytes) -> None:
    """Without crlf_verified (the queue's call), a bare CR or LF is made CRLF before the content
    goes out: sent as it is, `\\n.\\n` could end the message early at a lenient server."""
    peer = await Peer().start()
    try:
        upstream = SmtpUpstream(peer.url, timeout=5)
        delivery = await upstream.deliver("app@example.com", ["a@example.net"], data)
        await upstream.close()
        assert delivery.verdict is Verdict.SENT
        assert [m.data for m in peer.messages] == [sent]  # dot-stuffing undone by the peer
    finally:
        await peer.stop()


async def test_an_address_with_a_line_break_is_refused_before_a_byte_is_sent() -> None:
    peer = await Peer().start()
    try:
        upstream = SmtpUpstream(peer.url, timeout=5)
        delivery = await upstream.deliver("app@example.com", ["a@example.net>\r\nRSET"], MESSAGE)
        assert delivery.verdict is Verdict.PERMANENT and "control character" in delivery.reply
        assert peer.handler.mail_options == [] and peer.messages == []
        delivery = await upstream.deliver("app@example.com", ["a@example.net"], MESSAGE)
        await upstream.close()
        assert delivery.verdict is Verdict.SENT and peer.handler.connections == 1
    finally:
        await peer.stop()


# -- the reply reader on its own ----------------------------------------------------------------------

Session = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Session], Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(session: Session) -> int:
        server = await asyncio.start_server(session, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()


async def _reader(port: int) -> ReplyProtocol:
    _transport, protocol = await asyncio.get_running_loop().create_connection(ReplyProtocol, "127.0.0.1", port)
    return protocol


async def test_replies_multiline_lf_only_and_code_only(serve: Callable[[Session], Awaitable[int]]) -> None:
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"250-first\r\n250-  second  \r\n250 third\r\n221\n354 go on\n")
        await reader.read()

    protocol = await _reader(await serve(session))
    try:
        assert await protocol.read(3) == [Reply(250, "first\nsecond\nthird"), Reply(221, ""), Reply(354, "go on")]
    finally:
        protocol.close()


@pytest.mark.parametrize("garbage", [b"250 " + b"x" * MAX_LINE,
                                     (b"250-" + b"y" * 1000 + b"\r\n") * (MAX_REPLY // 1000 + 1)],
                         ids=["line without end", "continuation without end"])
async def test_an_endless_reply_is_malformed_not_memory(garbage: bytes,
                                                         serve: Callable[[Session], Awaitable[int]]) -> None:
    """No line end in sight, or continuation lines that never end: bounded, then an error."""
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(garbage)
        await reader.read()

    protocol = await _reader(await serve(session))
    try:
        with pytest.raises(MalformedReply, match="longer than"):
            await protocol.read(1)
        assert not protocol.usable
    finally:
        protocol.close()


def test_ehlo_keywords_and_old_style_auth() -> None:
    offered = parse_ehlo("mx.example greets you\nPIPELINING\nSIZE 35882577\nAUTH=LOGIN\nAUTH PLAIN LOGIN\n"
                         "8BITMIME\nSMTPUTF8\n-bogus")
    assert offered == {"pipelining": "", "size": "35882577", "auth": "LOGIN PLAIN LOGIN", "8bitmime": "",
                       "smtputf8": ""}


async def test_a_reply_injected_before_the_tls_handshake_is_ignored(server_tls: ssl.SSLContext,
                                                                     ca_file: str) -> None:
    """RFC 3207 (CVE-2011-0411's kind): bytes that came in plaintext with the 220 to STARTTLS
    must not be read as the answer to a command sent through TLS."""
    got: list[bytes] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 plain ESMTP\r\n")
        await reader.readline()  # EHLO
        writer.write(b"250-plain\r\n250 STARTTLS\r\n")
        got.append(await reader.readline())
        # one segment: the rest is the attack, a line left open so the first reply through TLS
        # would complete it (a whole reply would be dropped anyway: each command drops those)
        writer.write(b"220 2.0.0 go ahead\r\n250 injected ")
        await writer.drain()
        await writer.start_tls(server_tls)
        got.append(await reader.readline())  # EHLO again, through TLS
        writer.write(b"250-tls\r\n250 PIPELINING\r\n")
        got.extend([await reader.readline() for _ in range(3)])
        writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 2.0.0 queued through tls\r\n")
        await reader.readline()  # QUIT
        writer.write(b"221 bye\r\n")
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        upstream = SmtpUpstream(f"smtp+starttls://127.0.0.1:{port}", timeout=5, tls_ca_file=ca_file)
        delivery = await upstream.deliver("app@example.com", ["a@example.net"], MESSAGE)
        await upstream.close()
        assert delivery.verdict is Verdict.SENT and delivery.reply == "250 2.0.0 queued through tls"
        assert got[0] == b"STARTTLS\r\n" and got[1].startswith(b"EHLO ")
        assert got[2:] == [b"MAIL FROM:<app@example.com>\r\n", b"RCPT TO:<a@example.net>\r\n", b"DATA\r\n"]
    finally:
        server.close()


async def test_a_server_that_never_greets_is_given_up_at_the_deadline_and_hung_up_on(
        serve: Callable[[Session], Awaitable[int]]) -> None:
    hung_up = asyncio.Event()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # says nothing; returns when the client hangs up
        hung_up.set()

    upstream = SmtpUpstream(f"smtp://127.0.0.1:{await serve(session)}", timeout=0.5)
    delivery = await upstream.deliver("app@example.com", ["a@example.net"], MESSAGE)
    assert delivery.verdict is Verdict.TRANSIENT and delivery.reply == "upstream did not answer within 0.5s"
    assert delivery.failure_code == int(FailureCode.PROTOCOL_ERROR)
    await asyncio.wait_for(hung_up.wait(), 5)  # the half-open connection was closed, not leaked
    await upstream.close()
