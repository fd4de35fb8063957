"""Our SMTP client conversation: connect, EHLO (HELO where refused), STARTTLS or implicit TLS,
AUTH PLAIN/LOGIN, one mail transaction (pipelined where offered), NOOP, RSET, QUIT.

Why our own and not aiosmtplib: its reader keeps one reply per command and drops bytes that
arrive while a reply awaits pickup, so the replies to pipelined commands (RFC 2920), which tend
to arrive in one segment, are lost; and its DATA step runs two regex passes over every message.
Doing either with aiosmtplib meant patching its private internals. This client is small on
purpose: it speaks only what the relay's upstream needs, and raises its own errors
(ReplyError and friends, relay.upstream.wire's WireError), which relay.upstream.smtp turns
into Deliveries.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections.abc import Sequence

from relay.errors import RelayError
from relay.upstream.wire import ConnectionLost, Reply, ReplyProtocol, WireError

_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")  # CR, LF, NUL... in an argument would inject commands
_KEYWORD = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:[ =](.*))?")
JOIN_BELOW = 256 * 1024  # content up to this size goes out with its final dot in one write


class ClientError(RelayError):
    """A step of the conversation failed in a way the server did not phrase as a reply."""


class NotOffered(ClientError):
    """Something the configuration requires (STARTTLS, AUTH) the server does not offer."""


class BadArgument(ClientError):
    """An address or parameter that cannot go into a command line (a control character)."""


class ReplyError(ClientError):
    """The server refused a step with this reply."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class AuthRefused(ReplyError):
    """The server refused our login."""


class RecipientsRefused(ClientError):
    """Every recipient was refused: (recipient, reply) for each, in the order given."""

    def __init__(self, refusals: Sequence[tuple[str, Reply]]) -> None:
        super().__init__("; ".join(f"{r}: {reply}" for r, reply in refusals))
        self.refusals = list(refusals)


def parse_ehlo(message: str) -> dict[str, str]:
    """EHLO reply text -> {keyword in lower case: its parameters}; AUTH lists merge (AUTH=, old style)."""
    offered: dict[str, str] = {}
    for line in message.split("\n")[1:]:  # the first line is the server's name
        match = _KEYWORD.fullmatch(line.strip())
        if match is None:
            continue
        name, params = match.group(1).lower(), (match.group(2) or "").strip()
        if name == "auth" and name in offered:
            params = f"{offered[name]} {params}"
        offered[name] = params
    return offered


def path(address: str) -> bytes:
    """<address> for MAIL FROM / RCPT TO, UTF-8 where SMTPUTF8 allows it."""
    encoded = address.encode("utf-8")
    if _CONTROL.search(encoded):
        raise BadArgument(f"control character in address {address!r}")
    return b"<" + encoded + b">"


class SmtpClient:
    """One connection to an SMTP server, past its greeting and EHLO once connect() returns."""

    def __init__(self, protocol: ReplyProtocol, host: str, local_hostname: str) -> None:
        self.protocol = protocol
        self.host = host
        self.local_hostname = local_hostname
        self.extensions: dict[str, str] = {}  # empty after HELO

    @classmethod
    async def connect(cls, host: str, port: int, *, local_hostname: str, tls: ssl.SSLContext | None = None,
                      implicit_tls: bool = False, starttls: bool = False, username: str = "",
                      password: str = "") -> SmtpClient:
        """Connect, read the greeting, EHLO, STARTTLS if asked (then required), log in if asked.

        No timeout of its own: callers bound the whole attempt. Cancelled or failed midway, the
        connection is closed before the error goes on.
        """
        loop = asyncio.get_running_loop()
        if tls is None and (implicit_tls or starttls):
            tls = ssl.create_default_context()  # never plaintext where TLS is asked for
        _transport, protocol = await loop.create_connection(
            ReplyProtocol, host, port, ssl=tls if implicit_tls else None,
            server_hostname=host if implicit_tls else None)
        client = cls(protocol, host, local_hostname)
        try:
            [greeting] = await protocol.read(1)
            if greeting.code != 220:
                raise ReplyError(greeting)
            await client.hello()
            if starttls:
                assert tls is not None
                await client.starttls(tls)
            if username:
                await client.login(username, password)
        except BaseException:
            client.close()
            raise
        return client

    @property
    def usable(self) -> bool:
        """Still connected, with nothing left in doubt on the wire."""
        return self.protocol.usable

    def offers(self, extension: str) -> bool:
        """The server listed this extension (lower case) in its EHLO reply."""
        return extension in self.extensions

    async def command(self, line: bytes) -> Reply:
        """Write one command, read its reply."""
        self.protocol.write(line + b"\r\n")
        [reply] = await self.protocol.read(1)
        return reply

    async def hello(self) -> None:
        """EHLO; HELO where the server refuses EHLO for good (5xx), as old servers do."""
        name = self.local_hostname.encode("ascii", "replace")
        reply = await self.command(b"EHLO " + name)
        if reply.code == 250:
            self.extensions = parse_ehlo(reply.message)
            return
        if not 500 <= reply.code < 600:
            raise ReplyError(reply)
        reply = await self.command(b"HELO " + name)
        if reply.code != 250:
            raise ReplyError(reply)
        self.extensions = {}

    async def starttls(self, context: ssl.SSLContext) -> None:
        """STARTTLS (RFC 3207), the handshake, and EHLO again: what was offered in plaintext is
        forgotten. A server that does not offer it is an error, never a plaintext fallback."""
        if not self.offers("starttls"):
            raise NotOffered("the upstream does not offer STARTTLS")
        reply = await self.command(b"STARTTLS")
        if reply.code != 220:
            raise ReplyError(reply)
        protocol = self.protocol
        transport = protocol.transport
        if transport is None:
            raise ConnectionLost("connection lost")
        protocol.reset_buffer()
        tls_transport = await asyncio.get_running_loop().start_tls(
            transport, protocol, context, server_hostname=self.host)
        if tls_transport is None:
            raise ConnectionLost("connection lost during the TLS handshake")
        protocol.connection_made(tls_transport)
        await self.hello()

    async def login(self, username: str, password: str) -> None:
        """AUTH PLAIN, or AUTH LOGIN where PLAIN is not offered."""
        if "auth" not in self.extensions:
            raise NotOffered("the upstream does not offer AUTH")
        mechanisms = self.extensions["auth"].upper().split()
        user, secret = username.encode("utf-8"), password.encode("utf-8")
        if "PLAIN" in mechanisms:
            reply = await self.command(b"AUTH PLAIN " + base64.b64encode(b"\0" + user + b"\0" + secret))
        elif "LOGIN" in mechanisms:
            reply = await self.command(b"AUTH LOGIN")
            for answer in (user, secret):
                if reply.code != 334:
                    break
                reply = await self.command(base64.b64encode(answer))
        else:
            raise NotOffered(f"the upstream offers no AUTH mechanism we speak ({' '.join(mechanisms)})")
        if reply.code != 235:
            raise AuthRefused(reply)

    async def noop(self) -> None:
        """NOOP: is the connection still good?"""
        reply = await self.command(b"NOOP")
        if reply.code != 250:
            raise ReplyError(reply)

    async def quit(self) -> None:
        """QUIT, then hang up whatever the answer."""
        try:
            await self.command(b"QUIT")
        finally:
            self.close()

    def close(self) -> None:
        """Hang up at once."""
        self.protocol.close()

    async def send(self, mail_from: str, recipients: Sequence[str], content: bytes | bytearray,
                   options: Sequence[bytes] = ()) -> tuple[dict[str, Reply], Reply]:
        """One transaction: MAIL, RCPT..., DATA, then content, already dot-stuffed and ending in
        CRLF, sent as it is. Returns the recipients refused while others were taken, and the
        final reply. A refusal raises ReplyError (MAIL, DATA or the content's reply) or
        RecipientsRefused, after an RSET that keeps the connection usable; a broken conversation
        raises WireError with the connection closed.

        Where the server offers PIPELINING, MAIL, every RCPT and DATA go in one write and the
        content in another: two round trips instead of three plus one per recipient.
        """
        mail = b" ".join([b"MAIL FROM:" + path(mail_from), *options])
        for option in options:
            if _CONTROL.search(option):
                raise BadArgument(f"control character in MAIL parameter {option!r}")
        rcpts = [b"RCPT TO:" + path(r) for r in recipients]
        try:
            if self.offers("pipelining"):
                refused = await self._pipelined(mail, rcpts, recipients)
            else:
                refused = await self._one_by_one(mail, rcpts, recipients)
            return refused, await self._content(content)
        except (ReplyError, RecipientsRefused):
            await self._reset()
            raise
        except BaseException:
            self.close()  # lost, malformed or cancelled midway: nothing on the wire can be trusted
            raise

    async def _reset(self) -> None:
        """RSET after a refusal, so the connection can carry the next message; else hang up."""
        if not self.usable:
            return
        try:
            reply = await self.command(b"RSET")
        except WireError:
            return  # the protocol keeps the error: the connection is not reused
        except BaseException:
            self.close()
            raise
        if reply.code != 250:
            self.close()

    async def _one_by_one(self, mail: bytes, rcpts: list[bytes], recipients: Sequence[str]) -> dict[str, Reply]:
        reply = await self.command(mail)
        if reply.code != 250:
            raise ReplyError(reply)
        refused = {}
        for recipient, rcpt in zip(recipients, rcpts, strict=True):
            reply = await self.command(rcpt)
            if reply.code not in (250, 251):
                refused[recipient] = reply
        if len(refused) == len(recipients):
            raise RecipientsRefused(list(refused.items()))
        reply = await self.command(b"DATA")
        if reply.code != 354:
            raise ReplyError(reply)
        return refused

    async def _pipelined(self, mail: bytes, rcpts: list[bytes], recipients: Sequence[str]) -> dict[str, Reply]:
        commands = [mail, *rcpts, b"DATA"]
        self.protocol.write(b"\r\n".join(commands) + b"\r\n")
        replies = await self.protocol.read(len(commands))
        mail_reply, start = replies[0], replies[-1]
        refused = {r: reply for r, reply in zip(recipients, replies[1:-1], strict=True)
                   if reply.code not in (250, 251)}
        if start.code == 354 and (mail_reply.code != 250 or len(refused) == len(recipients)):
            # RFC 2920: the server took DATA with nothing to deliver; sending anything now, even
            # the final dot, could deliver an empty message. Hanging up is the one safe way out.
            self.close()
        if mail_reply.code != 250:
            raise ReplyError(mail_reply)
        if len(refused) == len(recipients):
            raise RecipientsRefused(list(refused.items()))
        if start.code != 354:
            raise ReplyError(start)
        return refused

    async def _content(self, content: bytes | bytearray) -> Reply:
        if len(content) <= JOIN_BELOW:
            self.protocol.write(content + b".\r\n")  # one syscall; the copy is cheap at this size
        else:
            self.protocol.write(content)
            self.protocol.write(b".\r\n")
        [reply] = await self.protocol.read(1)
        if reply.code != 250:
            raise ReplyError(reply)
        return reply
