"""relay's own SMTP session (relay/channels/smtp_session.py): paths, PROXY headers, and the protocol on the wire."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import struct

import pytest

from relay.channels import proxy_protocol
from relay.channels.smtp_address import parse_params, parse_path
from tests.conftest import LiveRelay, assert_untouched, running_relay
from tests.smtp_helpers import Raw, message
from tests.test_smtp_security import ca, certs, client_context  # noqa: F401  (fixtures)


@pytest.mark.parametrize(("arg", "expected"), [
    ("<a@b.test>", ("a@b.test", "")),
    (" <a@b.test>  SIZE=10 BODY=8BITMIME", ("a@b.test", "SIZE=10 BODY=8BITMIME")),
    ("a@b.test", ("a@b.test", "")),
    ("a@b.test SMTPUTF8", ("a@b.test", "SMTPUTF8")),
    ("<>", ("<>", "")),
    ("<> SIZE=5", ("<>", "SIZE=5")),
    ("<@relay.one,@relay.two:a@b.test>", ("a@b.test", "")),  # source route dropped (RFC 5321 C)
    ('<"q u"@b.test>', ('"q u"@b.test', "")),  # quoted where it must be
    ('<"qu"@b.test>', ("qu@b.test", "")),  # and only there
    ('<"a\\"b"@b.test>', ('"a\\"b"@b.test', "")),
    ('<"a>b"@b.test>', ('"a>b"@b.test', "")),  # a '>' inside quotes does not end the path
    ("<first.last+tag@sub.b.test>", ("first.last+tag@sub.b.test", "")),
    ("<user@[192.0.2.1]>", ("user@[192.0.2.1]", "")),
    ("<müller@bücher.example>", ("müller@bücher.example", "")),  # RFC 6531
    ("<用户@例子.广告>", ("用户@例子.广告", "")),
    ("<no-domain>", ("no-domain", "")),  # syntactically a path: the pipeline refuses it (5.1.3)
])
def test_paths_are_parsed(arg: str, expected: tuple[str, str]) -> None:
    assert parse_path(arg) == expected


@pytest.mark.parametrize("arg", [
    "", "<", "<a@b.test", "<not an address>", "<a@b.test>SIZE=1", "<a..b@c.test>", "<.a@c.test>",
    "<a@b..test>", "<a@>", "<a@b c.test>", '<"unclosed@b.test>', "<a(comment)@b.test>", "<a@b.test,c@d.test>",
    "<a@[1.2.3.4>", "<@relay.one a@b.test>", "<a\x00b@c.test>", "<a\tb@c.test>",
    b"<\xff\xfe@dest.test>".decode("utf-8", "surrogateescape"),  # not UTF-8: as the session decodes it
])
def test_malformed_paths_are_refused(arg: str) -> None:
    assert parse_path(arg) is None


def test_parameters() -> None:
    assert parse_params("SIZE=10 BODY=8BITMIME SMTPUTF8") == {"SIZE": "10", "BODY": "8BITMIME", "SMTPUTF8": True}
    assert parse_params("") == {}
    assert parse_params("SIZE=") is None
    assert parse_params("SI-ZE=1") is None


def _v2(command: int, family: int, body: bytes) -> bytes:
    return proxy_protocol.V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


@pytest.mark.parametrize(("header", "src", "sport"), [
    (b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 587\r\n", "203.0.113.7", 40000),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 587\r\n", "2001:db8::7", 40000),
    (b"PROXY UNKNOWN\r\n", None, None),
    (_v2(1, 0x11, socket.inet_aton("203.0.113.7") + socket.inet_aton("192.0.2.1") + struct.pack("!HH", 40000, 587)),
     "203.0.113.7", 40000),
    (_v2(1, 0x21, socket.inet_pton(socket.AF_INET6, "2001:db8::7") + socket.inet_pton(socket.AF_INET6, "::1")
         + struct.pack("!HH", 1, 2) + b"\x04\x00\x01x"),  # a TLV after the addresses is skipped
     "2001:db8::7", 1),
    (_v2(0, 0x00, b""), None, None),  # LOCAL: the balancer's own health check
])
def test_proxy_headers(header: bytes, src: str | None, sport: int | None) -> None:
    for cut in range(len(header)):  # however it arrives, the size is known only when it can be
        assert proxy_protocol.needed(header[:cut]) in (0, len(header))
    assert proxy_protocol.needed(header + b"EHLO x\r\n") == len(header)
    data = proxy_protocol.parse(header)
    assert (data.src_addr, data.src_port) == (src, sport)


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 203.0.113.7 192.0.2.1 40000\r\n", b"PROXY TCP4 2001:db8::7 192.0.2.1 1 2\r\n",
    b"PROXY TCP4 203.0.113.7 192.0.2.1 -1 2\r\n", b"PROXY TCP9 a b 1 2\r\n",
    _v2(1, 0x11, b"\x01\x02"),  # too short for its family
    proxy_protocol.V2_SIGNATURE + bytes([0x31, 0x11]) + struct.pack("!H", 12) + bytes(12),  # version 3
])
def test_malformed_proxy_headers(header: bytes) -> None:
    assert proxy_protocol.needed(header) == len(header)
    with pytest.raises(proxy_protocol.ProxyError):
        proxy_protocol.parse(header)


def test_not_a_proxy_header() -> None:
    assert proxy_protocol.needed(b"EHLO client.test\r\n") == -1
    assert proxy_protocol.needed(b"PROXY " + b"x" * 200) == -1


def running(db_dsn: str, store, peer, **smtp: object) -> contextlib.AbstractAsyncContextManager[LiveRelay]:  # type: ignore[no-untyped-def]
    """A live relay with these [smtp] settings."""
    return running_relay(db_dsn, store, peer, smtp=dict(smtp))


async def test_plaintext_sent_with_starttls_is_dropped(db_dsn, store, peer, certs, ca) -> None:  # noqa: F811
    """RFC 3207 5: commands sent in plaintext after STARTTLS (injection) are never answered."""
    async with running(db_dsn, store, peer, tls_cert=certs["cert"], tls_key=certs["key"]) as live:
        raw = await Raw.open(live.port)
        await raw.cmd("EHLO client.test")
        assert (await raw.cmd(b"STARTTLS\r\nBOGUS\r\n")).startswith("220")
        await raw.writer.start_tls(client_context(ca), server_hostname="relay.test")
        assert (await raw.cmd("NOOP")) == "250 OK\r\n"  # not the injected BOGUS's 500
        ehlo = await raw.cmd("EHLO client.test")  # RFC 3207 4.2: the session starts over
        assert "STARTTLS" not in ehlo and "AUTH" in ehlo
        raw.close()


async def test_proxy_v2_client_address_is_used(db_dsn, store, peer) -> None:
    async with running(db_dsn, store, peer, proxy_protocol=True) as live:
        t = await live.tenant()
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        body = socket.inet_aton("198.51.100.9") + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 5000, 587)
        header = _v2(1, 0x11, body)
        writer.write(header[:7])  # the header may come in pieces
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(header[7:])
        raw = Raw(reader, writer)
        assert (await raw.reply()).startswith("220")
        await raw.begin_data(t.key, t.sender)
        assert (await raw.cmd(message(t.sender) + b".\r\n")).startswith("250 OK: ")
        raw.close()
        assert b"([198.51.100.9])" in live.peer.messages[0].data
        # a health check (LOCAL) names no client: closed without a greeting
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(_v2(0, 0, b""))
        assert await Raw(reader, writer).closed()


async def test_protocol_corners(relay: LiveRelay) -> None:
    t = await relay.tenant()
    raw = await Raw.open(relay.port)
    assert (await raw.cmd("MAIL FROM:<a@b.test>")).startswith("503")  # no HELO yet
    assert (await raw.cmd("HELO client.test")).startswith("250")
    assert (await raw.cmd("AUTH PLAIN")).startswith("500")  # AUTH is an EHLO extension
    assert (await raw.cmd(b"NOOP " + b"x" * 2000 + b"\r\n")).startswith("500 Command line too long")
    assert (await raw.cmd(b"NOOP " + b"x" * 20000 + b"\r\n")).startswith("500 Command line too long")
    assert (await raw.cmd("VRFY someone@dest.test")).startswith("530")  # not before AUTH
    assert (await raw.cmd("EHLO client.test")).startswith("250")
    # AUTH PLAIN in its challenge form
    assert (await raw.cmd("AUTH PLAIN")).startswith("334 ")
    assert (await raw.cmd(base64.b64encode(b"\0app\0" + t.key.encode()).decode())).startswith("235")
    assert (await raw.cmd("VRFY someone@dest.test")).startswith("252")
    assert "MAIL" in await raw.cmd("HELP")
    assert (await raw.cmd(f"MAIL FROM:<{t.sender}> FOO=1")).startswith("555")
    assert (await raw.cmd(f"MAIL FROM:<{t.sender}> BODY=9BIT")).startswith("501")
    assert (await raw.cmd(f"MAIL FROM:<{t.sender}>")).startswith("250")
    assert (await raw.cmd(f"MAIL FROM:<{t.sender}>")).startswith("503")  # nested
    assert (await raw.cmd("RCPT TO:<a@dest.test> NOTIFY=NEVER")).startswith("555")
    assert (await raw.cmd("RCPT TO:<a@dest.test")).startswith("553 5.1.3")
    assert (await raw.cmd(b"RCPT TO:<\xff\xfe@dest.test>\r\n")).startswith("553 5.1.3")  # not UTF-8
    assert (await raw.cmd("RSET")).startswith("250")
    assert (await raw.cmd("RCPT TO:<a@dest.test>")).startswith("503")  # RSET ended the transaction
    assert (await raw.cmd("QUIT")).startswith("221")
    assert await raw.closed()
    await assert_untouched(relay, t, 100)


async def test_auth_login_forms_and_abort(relay: LiveRelay) -> None:
    t = await relay.tenant()
    key = base64.b64encode(t.key.encode()).decode()
    raw = await Raw.open(relay.port)
    await raw.cmd("EHLO client.test")
    assert (await raw.cmd("AUTH LOGIN")) == "334 VXNlciBOYW1lAA==\r\n"  # "User Name\0"
    assert (await raw.cmd("*")).startswith("501")  # aborted: no attempt counted
    assert (await raw.cmd("AUTH LOGIN " + base64.b64encode(b"app").decode())) == "334 UGFzc3dvcmQA\r\n"
    assert (await raw.cmd("not base64!")).startswith("501 5.5.2")
    assert (await raw.cmd("AUTH LOGIN " + base64.b64encode(b"app").decode())).startswith("334 ")
    assert (await raw.cmd(key)).startswith("235")
    assert (await raw.cmd("AUTH LOGIN")).startswith("503")  # already authenticated
    raw.close()


async def test_bogus_commands_end_the_session(relay: LiveRelay) -> None:
    raw = await Raw.open(relay.port)
    for _ in range(4):
        assert (await raw.cmd("BOGUS")).startswith("500")
    assert (await raw.cmd("BOGUS")).startswith("502 5.5.1")
    assert await raw.closed()


async def test_a_trickled_command_line_does_not_hold_the_idle_timer(db_dsn, store, peer) -> None:
    async with running(db_dsn, store, peer, idle_timeout_seconds=0.6) as live:
        raw = await Raw.open(live.port)
        started = asyncio.get_running_loop().time()

        async def trickle() -> None:
            for byte in b"EHLO " + b"x" * 100:
                raw.writer.write(bytes([byte]))
                await raw.writer.drain()
                await asyncio.sleep(0.1)

        dripping = asyncio.create_task(trickle())
        try:
            reply = await raw.reply(timeout=5)
        finally:
            dripping.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await dripping
        assert reply.startswith("421 4.4.2") and "timeout" in reply
        assert asyncio.get_running_loop().time() - started < 3
        assert await raw.closed()


def test_starttls_and_pipelining_on_uvloop_the_servers_loop(certs, ca) -> None:  # noqa: F811
    """relay serve runs on uvloop: the session's start_tls and its buffer work there too."""
    import ssl

    import uvloop

    from relay.channels.smtp_session import SmtpSession

    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(certs["cert"], certs["key"])

    async def scenario() -> list[str]:
        server = await asyncio.get_running_loop().create_server(
            lambda: SmtpSession(hostname="relay.test", idle_timeout=5, max_message_bytes=1000,
                                tls_context=server_tls), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            raw = await Raw.open(port)
            got = [await raw.cmd("EHLO client.test"), await raw.cmd(b"STARTTLS\r\nBOGUS\r\n")]
            await raw.writer.start_tls(client_context(ca), server_hostname="relay.test")
            raw.writer.write(b"EHLO client.test\r\nNOOP\r\nQUIT\r\n")  # pipelined, inside TLS
            got += [await raw.reply(), await raw.reply(), await raw.reply()]
            got.append("closed" if await raw.closed() else "open")
            return got
        finally:
            server.close()

    ehlo, starttls, ehlo_tls, noop, quit_, closed = uvloop.run(scenario())
    assert "STARTTLS" in ehlo and starttls.startswith("220")
    assert ehlo_tls.startswith("250-relay.test") and "STARTTLS" not in ehlo_tls
    assert (noop, quit_, closed) == ("250 OK\r\n", "221 Bye\r\n", "closed")


async def test_commands_sent_before_a_half_close_are_answered(relay: LiveRelay) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(b"EHLO client.test\r\nNOOP\r\nQUIT\r\n")
    writer.write_eof()
    raw = Raw(reader, writer)
    replies = [await raw.reply() for _ in range(4)]
    assert replies[0].startswith("220") and replies[1].startswith("250-relay.test")
    assert replies[2:] == ["250 OK\r\n", "221 Bye\r\n"]
    assert await raw.closed()


async def test_a_client_that_never_reads_is_closed(db_dsn, store, peer) -> None:
    async with running(db_dsn, store, peer, idle_timeout_seconds=0.5, max_commands=10_000_000) as live:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # replies pile up on the server
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", live.port))
        _reader, writer = await asyncio.open_connection(sock=sock)
        started = loop.time()
        outcome = "still open"
        try:  # keep asking for replies, never read one: the server must give up on this client
            while loop.time() < started + 12:
                writer.write(b"EHLO client.test\r\n" * 100)
                await asyncio.wait_for(writer.drain(), started + 12 - loop.time())
        except ConnectionError:
            outcome = "closed"
        except TimeoutError:
            outcome = "stuck"
        assert outcome == "closed"
        assert loop.time() - started < 10
        writer.close()
        from tests.conftest import eventually
        await eventually(lambda: not live.server.channel("smtp").handler.connections, what="the session ended")
