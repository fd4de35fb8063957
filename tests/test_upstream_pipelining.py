"""The SMTP upstream with and without PIPELINING: same outcomes, fewer round trips, no reply lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from relay.upstream.base import Verdict
from relay.upstream.smtp import SmtpUpstream
from relay.upstream.wire import ReplyProtocol
from tests.peer import Peer

MESSAGE = b"From: app@example.com\r\nTo: a@example.net\r\nSubject: hi\r\n\r\nhello\r\n.dotted line\r\n"


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
async def peer(request: pytest.FixtureRequest) -> AsyncIterator[Peer]:
    p = await Peer(size_limit=1_000_000).start()  # offers SIZE, so MAIL carries SIZE=
    p.handler.pipelining = request.param
    yield p
    await p.stop()


@pytest.fixture
async def upstream(peer: Peer) -> AsyncIterator[SmtpUpstream]:
    u = SmtpUpstream(peer.url, timeout=5)
    yield u
    await u.close()


async def _deliver(upstream: SmtpUpstream, *recipients: str):
    return await upstream.deliver("app@example.com", list(recipients), MESSAGE, crlf_verified=True)


async def _then_one_more_goes_through(upstream: SmtpUpstream, peer: Peer, before: int) -> None:
    """The connection is still good after whatever happened: the next message uses it."""
    delivery = await _deliver(upstream, "z@example.net")
    assert delivery.verdict is Verdict.SENT
    assert len(peer.messages) == before + 1 and peer.messages[-1].recipients == ["z@example.net"]
    assert peer.handler.connections == 1


async def test_a_message_goes_through_whole(peer: Peer, upstream: SmtpUpstream) -> None:
    delivery = await _deliver(upstream, "a@example.net", "b@example.net")
    assert delivery.verdict is Verdict.SENT and delivery.refused == ()
    assert delivery.reply.startswith("250 2.0.0 Ok: queued as PEER1")
    [got] = peer.messages
    assert got.mail_from == "app@example.com" and got.recipients == ["a@example.net", "b@example.net"]
    assert got.data == MESSAGE  # dot-stuffing undone by the peer: the bytes arrived as given
    assert peer.handler.mail_options == [[f"SIZE={len(MESSAGE)}"]]
    await _then_one_more_goes_through(upstream, peer, 1)


async def test_one_recipient_refused_the_rest_delivered(peer: Peer, upstream: SmtpUpstream) -> None:
    peer.handler.rcpt_replies["bad@example.net"] = "550 5.1.1 no such user"
    delivery = await _deliver(upstream, "a@example.net", "bad@example.net", "c@example.net")
    assert delivery.verdict is Verdict.SENT and delivery.refused == ("bad@example.net",)
    assert "refused: bad@example.net (550)" in delivery.reply
    assert peer.messages[0].recipients == ["a@example.net", "c@example.net"]
    await _then_one_more_goes_through(upstream, peer, 1)


@pytest.mark.parametrize(("stage", "reply", "verdict"), [
    ("mail", "451 4.3.0 try later", Verdict.TRANSIENT),
    ("mail", "553 5.7.1 sender refused", Verdict.PERMANENT),
    ("rcpt", "550 5.1.1 no such user", Verdict.PERMANENT),
    ("rcpt", "450 4.2.0 mailbox busy", Verdict.TRANSIENT),
    ("data", "554 5.6.0 content refused", Verdict.PERMANENT),
    ("data", "452 4.3.1 out of space", Verdict.TRANSIENT),
])
async def test_refusals_at_each_stage_send_nothing_and_keep_the_connection(
        peer: Peer, upstream: SmtpUpstream, stage: str, reply: str, verdict: Verdict) -> None:
    if stage == "mail":
        peer.handler.mail_reply = reply
    elif stage == "rcpt":
        peer.handler.rcpt_replies.update({"a@example.net": reply, "b@example.net": reply})
    else:
        peer.handler.data_reply = reply
    delivery = await _deliver(upstream, "a@example.net", "b@example.net")
    assert delivery.verdict is verdict and delivery.reply == reply
    assert peer.messages == []
    peer.handler.mail_reply = peer.handler.data_reply = None
    await _then_one_more_goes_through(upstream, peer, 0)


async def test_with_pipelining_a_message_is_two_writes() -> None:
    """MAIL, RCPT x3 and DATA in one write, the content and its dot in another (four writes more
    without PIPELINING: one per command)."""
    writes: dict[bool, int] = {}
    for offered in (True, False):
        peer = await Peer().start()
        peer.handler.pipelining = offered
        upstream = SmtpUpstream(peer.url, timeout=5)
        try:
            assert (await _deliver(upstream, "a@example.net")).verdict is Verdict.SENT  # connected, EHLO done
            [conn] = upstream._idle
            protocol = conn.client.protocol
            assert isinstance(protocol, ReplyProtocol)
            transport = protocol.transport
            counted = 0
            original = transport.write

            def write(data: bytes, original=original) -> None:
                nonlocal counted
                counted += 1
                original(data)

            protocol.transport = _Wrapped(transport, write)
            delivery = await _deliver(upstream, "a@example.net", "b@example.net", "c@example.net")
            assert delivery.verdict is Verdict.SENT
            writes[offered] = counted
            protocol.transport = transport
        finally:
            await upstream.close()
            await peer.stop()
    assert writes == {True: 2, False: 6}


class _Wrapped:
    """A transport whose write is counted; everything else is the real transport's."""

    def __init__(self, transport: asyncio.BaseTransport, write: Callable[[bytes], None]) -> None:
        self._transport = transport
        self.write = write

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


# -- a scripted server: replies exactly as a test says, in the segments it says ---------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Scripted:
    """A scripted server's session, seen from the test: the upstream relay would use, and what
    else the client sent before it hung up (filled once it has)."""

    upstream: SmtpUpstream
    server: asyncio.Server
    seen: list[bytes]

    async def ended(self) -> None:
        """Stop the server once its session has seen the client hang up."""
        for _ in range(200):
            if self.seen:
                break
            await asyncio.sleep(0.01)
        self.server.close()
        assert self.seen, "the client never hung up"


@contextlib.asynccontextmanager
async def scripted(script: Script, ehlo: bytes = b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
                   ) -> AsyncIterator[Scripted]:
    """A server that greets, answers EHLO (with PIPELINING), then runs script; an upstream to it."""
    seen: list[bytes] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        assert (await reader.readline()).startswith(b"EHLO")
        writer.write(ehlo)
        try:
            await script(reader, writer)
            seen.append(await reader.read())  # whatever else the client sent before it hung up
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    it = Scripted(SmtpUpstream(f"smtp://127.0.0.1:{port}", timeout=5), server, seen)
    try:
        yield it
    finally:
        await it.upstream.close()
        await it.ended()


async def _group(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    return [await reader.readline() for _ in range(count)]


@pytest.mark.parametrize("split", ["one segment", "byte by byte"])
async def test_replies_arriving_together_or_in_pieces_are_all_read(split: str) -> None:
    """aiosmtplib's reader dropped a reply that arrived with another; ours keeps every byte."""
    got: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.extend(await _group(reader, 4))  # MAIL, RCPT, RCPT, DATA
        replies = b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n354 go ahead\r\n"
        if split == "one segment":
            writer.write(replies)
        else:
            for i in range(len(replies)):
                writer.write(replies[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0)
        got.append(await reader.readuntil(b"\r\n.\r\n"))
        writer.write(b"250 2.0.0 queued\r\n")
        got.append(await reader.readline())  # QUIT, at close
        writer.write(b"221 bye\r\n")

    async with scripted(script) as run:
        delivery = await _deliver(run.upstream, "a@example.net", "bad@example.net")
        assert delivery.verdict is Verdict.SENT and delivery.refused == ("bad@example.net",)
        assert delivery.reply.startswith("250 2.0.0 queued; refused: bad@example.net (550)")
        assert got[:4] == [b"MAIL FROM:<app@example.com>\r\n",
                           b"RCPT TO:<a@example.net>\r\n", b"RCPT TO:<bad@example.net>\r\n", b"DATA\r\n"]
        assert got[4] == MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\n"


async def test_data_taken_with_every_recipient_refused_hangs_up_without_sending() -> None:
    """RFC 2920: a server may answer 354 to a pipelined DATA although no RCPT was accepted; the
    client then must not send the message. Hanging up is the one way out that sends nothing."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _group(reader, 3)
        writer.write(b"250 ok\r\n550 5.1.1 no such user\r\n354 go ahead\r\n")

    async with scripted(script) as run:
        delivery = await _deliver(run.upstream, "bad@example.net")
        assert delivery.verdict is Verdict.PERMANENT and delivery.reply == "550 5.1.1 no such user"
        await run.ended()
        assert run.seen == [b""]  # not a byte of the message, not even the final dot
        assert run.upstream._idle == []  # that connection is not reused


async def test_a_server_that_hangs_up_mid_group_is_a_transient_failure() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _group(reader, 3)
        writer.write(b"250 ok\r\n")
        writer.close()  # two replies short

    async with scripted(script) as run:
        delivery = await _deliver(run.upstream, "a@example.net")
        assert delivery.verdict is Verdict.TRANSIENT and "upstream connection failed" in delivery.reply
        assert run.upstream._idle == []


async def test_a_reply_beyond_the_group_is_not_taken_for_the_next_one() -> None:
    """A server that answers the group with one reply too many must not make a refused message
    look sent: the extra reply is dropped, the content's own reply decides."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _group(reader, 3)
        writer.write(b"250 ok\r\n250 ok\r\n354 go ahead\r\n250 2.0.0 not yours\r\n")
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"554 5.6.0 content refused\r\n")
        await reader.readline()  # RSET
        writer.write(b"250 reset\r\n")
        await reader.readline()  # QUIT, at close
        writer.write(b"221 bye\r\n")

    async with scripted(script) as run:
        delivery = await _deliver(run.upstream, "a@example.net")
        assert delivery.verdict is Verdict.PERMANENT and delivery.reply == "554 5.6.0 content refused"


def test_pipelining_works_on_uvloop_the_servers_loop() -> None:
    """relay serve runs on uvloop, whose transports keep the protocol's bound methods: the reader
    that collects pipelined replies must be the one they call (the tests above run on asyncio's)."""
    import uvloop

    async def scenario() -> list[Verdict]:
        peer = await Peer().start()
        upstream = SmtpUpstream(peer.url, timeout=5)
        try:
            verdicts = [(await _deliver(upstream, "a@example.net", "b@example.net")).verdict for _ in range(3)]
            [conn] = upstream._idle
            assert conn.client.offers("pipelining")
            assert len(peer.messages) == 3 and peer.handler.connections == 1
            return verdicts
        finally:
            await upstream.close()
            await peer.stop()

    assert uvloop.run(scenario()) == [Verdict.SENT] * 3


async def test_the_deadline_counts_the_wait_for_a_free_connection(peer: Peer) -> None:
    """With every pooled connection busy on a stalled upstream, a waiting send gives up at the
    deadline like any other: the recovery sweep's margin over the timeout relies on it."""
    peer.handler.data_delay = 6.0
    timeout = 2.0  # long enough that a loaded machine's delays stay well inside the margin below
    upstream = SmtpUpstream(peer.url, timeout=timeout, pool_size=1)
    loop = asyncio.get_running_loop()

    async def timed(recipient: str) -> tuple[Verdict, float]:
        started = loop.time()
        delivery = await _deliver(upstream, recipient)
        return delivery.verdict, loop.time() - started

    try:
        (first, _), (second, waited) = await asyncio.gather(timed("a@example.net"), timed("b@example.net"))
        assert first is second is Verdict.TRANSIENT
        # its own timeout, not the first send's and then one more (that would be 2 x timeout)
        assert waited < 1.5 * timeout
    finally:
        await upstream.close()


async def test_a_malformed_reply_in_the_group_ends_the_connection() -> None:
    """After a reply that cannot be read, the ones behind it no longer pair with the commands, and
    the server may be in its data phase: an RSET there would be message text. Hang up instead."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _group(reader, 3)
        writer.write(b"250 ok\r\n2x0 weird\r\n354 go ahead\r\n")

    async with scripted(script) as run:
        delivery = await _deliver(run.upstream, "a@example.net")
        assert delivery.verdict is Verdict.TRANSIENT and "malformed reply line: '2x0 weird'" in delivery.reply
        await run.ended()
        assert run.seen == [b""]  # no RSET, no message data
        assert run.upstream._idle == []


async def test_an_upstream_that_refuses_ehlo_gets_helo_and_one_command_at_a_time() -> None:
    got: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for reply in (b"250 hello\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go ahead\r\n"):
            got.append(await reader.readline())  # HELO, MAIL, RCPT, DATA: each alone
            writer.write(reply)
        got.append(await reader.readuntil(b"\r\n.\r\n"))
        writer.write(b"250 2.0.0 queued\r\n")
        await reader.readline()  # QUIT, at close
        writer.write(b"221 bye\r\n")

    async with scripted(script, ehlo=b"502 5.5.2 EHLO not supported\r\n") as run:
        delivery = await _deliver(run.upstream, "a@example.net")
        assert delivery.verdict is Verdict.SENT
        assert got[0].startswith(b"HELO ") and got[1:4] == [
            b"MAIL FROM:<app@example.com>\r\n", b"RCPT TO:<a@example.net>\r\n", b"DATA\r\n"]
