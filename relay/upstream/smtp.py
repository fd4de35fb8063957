"""The SMTP smarthost upstream: a bounded pool of aiosmtplib connections, errors turned into Deliveries."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX, MAX_RESPONSE_LENGTH, SMTPProtocol
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import Default, SMTPStatus

from relay.hygiene import has_bare_cr_or_lf
from relay.upstream.base import Delivery, Verdict
from relay.upstream.classify import FailureCode, classify, for_connect_failure, for_timeout

_DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
_CHECK_IDLE_AFTER = 5.0  # a connection idle longer than this gets a NOOP before reuse
_JOIN_BELOW = 256 * 1024  # DATA content up to this size goes out with its final dot in one write


def _reply(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}"[:500]


def _verdict(code: int) -> Verdict:
    return Verdict.PERMANENT if 500 <= code < 600 else Verdict.TRANSIENT


def _dot_stuffed(data: bytes | bytearray, verified: bool = False,
                 dot_free: bool = False) -> bytes | bytearray | None:
    """DATA content for clean CRLF data without aiosmtplib's two regex passes; None if not clean.

    The usual message, where no line starts with a dot, is sent as it is, without a copy;
    dot_free (the caller looked already) spares the search for such lines.
    """
    if not verified and has_bare_cr_or_lf(data):
        return None  # sent as is, a bare CR or LF could end the message early at a lenient upstream
    stuffed = data
    if not dot_free and data.find(b"\r\n.") >= 0:
        stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if stuffed and not stuffed.endswith(b"\r\n"):
        stuffed = stuffed + b"\r\n"  # never +=: that would change the caller's bytearray
    return stuffed


class _Protocol(SMTPProtocol):
    """aiosmtplib's protocol, able to collect the replies to commands written together (RFC 2920).

    aiosmtplib reads one reply per command: bytes that arrive while a parsed reply awaits pickup
    are dropped, so the replies to pipelined commands, which tend to arrive in one segment, would
    be lost. While `pipelined` waits, every byte is kept and parsed here instead.
    """

    _expected = 0
    _replies: list[SMTPResponse]
    _all_in: asyncio.Future[list[SMTPResponse]] | None = None

    async def pipelined(self, commands: bytes, count: int) -> list[SMTPResponse]:
        """Write commands at once and return their count replies, in order."""
        lock = self._command_lock
        if lock is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        async with lock:
            self._replies = []
            self._expected = count
            self._all_in = all_in = self._loop.create_future()
            try:
                self.write(commands)
                return await all_in
            finally:
                self._all_in = None
                del self._buffer[:]  # a reply beyond those expected must not pair with a later command

    def data_received(self, data: bytes) -> None:
        if self._all_in is None:
            super().data_received(data)
            return
        self._buffer.extend(data)
        self._collect()

    def _collect(self) -> None:
        all_in = self._all_in
        if all_in is None or all_in.done():
            return
        try:
            while len(self._replies) < self._expected:
                reply = self._read_response_from_buffer()
                if reply is None:
                    if len(self._buffer) > MAX_RESPONSE_LENGTH:
                        raise aiosmtplib.SMTPResponseException(SMTPStatus.invalid_response, "Response too long")
                    return
                self._replies.append(reply)
        except Exception as exc:  # a malformed reply, as aiosmtplib's own reader reports it
            all_in.set_exception(exc)
            return
        all_in.set_result(self._replies)

    def _lost(self) -> None:
        if self._all_in is not None and not self._all_in.done():
            self._all_in.set_exception(aiosmtplib.SMTPServerDisconnected("Connection lost"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()
        super().connection_lost(exc)

    def eof_received(self) -> bool:
        self._lost()
        return super().eof_received()


class _Client(aiosmtplib.SMTP):
    """aiosmtplib's client with a DATA step that neither regex-normalizes nor copies clean data,
    and a whole transaction in two round trips where the server offers PIPELINING."""

    async def connect(self, *args: Any, **kwargs: Any) -> SMTPResponse:
        response = await super().connect(*args, **kwargs)
        if type(self.protocol) is SMTPProtocol and self.transport is not None:
            # aiosmtplib builds its protocol itself: the same object, given _Protocol's reader.
            # uvloop's transports keep the protocol's bound methods: set_protocol makes them
            # look again, or data would still reach aiosmtplib's reader and be dropped.
            self.protocol.__class__ = _Protocol
            self.transport.set_protocol(self.protocol)
        return response

    async def data(self, message: Any, /, *, timeout: Any = Default.token, verified: bool = False,
                   dot_free: bool = False) -> SMTPResponse:
        stuffed = (_dot_stuffed(message, verified, dot_free) if isinstance(message, (bytes, bytearray))
                   else None)
        protocol = self.protocol
        # the fast path leans on aiosmtplib internals (pinned <5.2): anything unexpected falls back
        if stuffed is None or protocol is None or getattr(protocol, "_command_lock", None) is None:
            return await super().data(message, timeout=timeout)
        await self._ehlo_or_helo_if_needed()
        if timeout is Default.token:
            timeout = self.timeout
        try:
            async with protocol._command_lock:
                protocol._response_pending = True
                protocol.write(b"DATA\r\n")
                start = await protocol.read_response(timeout=timeout)
                if start.code != SMTPStatus.start_input:
                    raise aiosmtplib.SMTPDataError(start.code, start.message)
                return await self._content(protocol, stuffed, timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()
            raise

    @staticmethod
    async def _content(protocol: SMTPProtocol, stuffed: bytes | bytearray, timeout: Any) -> SMTPResponse:
        """After a 354: the dot-stuffed content, the final dot, the reply."""
        protocol._response_pending = True
        if len(stuffed) <= _JOIN_BELOW:
            protocol.write(stuffed + b".\r\n")  # one syscall; the copy is cheap at this size
        else:
            protocol.write(stuffed)
            protocol.write(b".\r\n")
        response = await protocol.read_response(timeout=timeout)
        if response.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
        return response

    def can_pipeline(self, mail_from: str, recipients: Sequence[str]) -> bool:
        """The server offers PIPELINING and the envelope needs nothing but ASCII."""
        return (isinstance(self.protocol, _Protocol) and self.supports_extension("pipelining")
                and mail_from.isascii() and all(r.isascii() for r in recipients))

    async def pipelined_transaction(self, mail_from: str, recipients: Sequence[str], options: list[str],
                                    stuffed: bytes | bytearray) -> tuple[dict[str, SMTPResponse], SMTPResponse]:
        """MAIL, every RCPT and DATA in one write, then the content: the refused recipients and
        the final reply; refusals raise as aiosmtplib's own steps raise them."""
        protocol = self.protocol
        assert isinstance(protocol, _Protocol)
        commands = [b" ".join([b"MAIL FROM:" + quote_address(mail_from).encode("ascii"),
                               *(o.encode("ascii") for o in options)])]
        commands += [b"RCPT TO:" + quote_address(r).encode("ascii") for r in recipients]
        commands.append(b"DATA")
        if any(COMMAND_INJECTION_REGEX.search(c) for c in commands):
            raise ValueError("Command arg contains a prohibited control character")
        try:
            try:
                replies = await protocol.pipelined(b"\r\n".join(commands) + b"\r\n", len(commands))
            except BaseException:
                # a malformed or missing reply: the rest no longer pair with the commands (the
                # server may even be reading message data), so this connection is done
                self.close()
                raise
            mail, start = replies[0], replies[-1]
            refused = {r: reply for r, reply in zip(recipients, replies[1:-1], strict=True)
                       if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward)}
            if start.code == SMTPStatus.start_input and (
                    mail.code != SMTPStatus.completed or len(refused) == len(recipients)):
                # the server took DATA with nothing to deliver: leaving is the one safe way out
                self.close()
            if mail.code != SMTPStatus.completed:
                raise aiosmtplib.SMTPSenderRefused(mail.code, mail.message, mail_from)
            if len(refused) == len(recipients):
                raise aiosmtplib.SMTPRecipientsRefused(
                    [aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, r) for r, reply in refused.items()])
            if start.code != SMTPStatus.start_input:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            return refused, await self._content(protocol, stuffed, self.timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()
            raise


async def _transaction(client: _Client, mail_from: str, recipients: Sequence[str], data: bytes | bytearray,
                       verified: bool, dot_free: bool = False) -> tuple[dict[str, SMTPResponse], str]:
    """MAIL, RCPT..., DATA like aiosmtplib's sendmail, minus its regex pass over the whole message
    to compute SIZE (our data is CRLF-clean, so SIZE is its length); RSET after a refusal.
    Pipelined where the server allows it: two round trips instead of three plus one per recipient."""
    try:
        await client._ehlo_or_helo_if_needed()  # EHLO, or HELO where EHLO is refused
        options = [f"SIZE={len(data)}"] if client.supports_extension("size") else []
        stuffed = _dot_stuffed(data, verified, dot_free) if client.can_pipeline(mail_from, recipients) else None
        if stuffed is not None:
            refused, response = await client.pipelined_transaction(mail_from, recipients, options, stuffed)
            return refused, response.message
        await client.mail(mail_from, options=options)
        refused = {}
        refusals: list[aiosmtplib.SMTPRecipientRefused] = []
        for recipient in recipients:
            try:
                await client.rcpt(recipient)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused[recipient] = SMTPResponse(exc.code, exc.message)
                refusals.append(exc)
        if len(refusals) == len(recipients):
            raise aiosmtplib.SMTPRecipientsRefused(refusals)
        response = await client.data(data, verified=verified, dot_free=dot_free)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.rset()
        raise
    return refused, response.message


class _Conn:
    """A pooled client and when it was last used."""

    __slots__ = ("client", "last_used")

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.last_used = time.monotonic()


class SmtpUpstream:
    """Relays over smtp://, smtp+starttls:// (TLS required) or smtps://, reusing connections."""

    def __init__(self, url: str, *, username: str = "", password: str = "", timeout: float = 30.0,
                 pool_size: int = 10, tls_verify: bool = True, tls_ca_file: str = "",
                 local_hostname: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an SMTP upstream URL: {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or _DEFAULT_PORTS[parts.scheme]
        self.username = username or unquote(parts.username or "")
        self.password = password or unquote(parts.password or "")
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._tls: ssl.SSLContext | None = None
        if self.scheme != "smtp":
            self._tls = ssl.create_default_context(cafile=tls_ca_file or None)
            if not tls_verify:
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[_Conn] = []
        self._busy = 0
        self._closed = False

    @property
    def in_use(self) -> int:
        """Connections carrying a message right now."""
        return self._busy

    async def _connect(self) -> _Conn:
        client = _Client(
            hostname=self.host, port=self.port, timeout=self.timeout,
            use_tls=self.scheme == "smtps",
            # True makes STARTTLS mandatory: a stripped STARTTLS is an error, not plaintext
            start_tls=self.scheme == "smtp+starttls",
            tls_context=self._tls, local_hostname=self.local_hostname,
        )
        await client.connect()
        if self.username:
            await client.login(self.username, self.password)
        return _Conn(client)

    async def _checkout(self) -> _Conn:
        while self._idle:
            conn = self._idle.pop()
            if not conn.client.is_connected:
                continue
            if time.monotonic() - conn.last_used > _CHECK_IDLE_AFTER:
                try:
                    await conn.client.noop()
                except (aiosmtplib.SMTPException, OSError):
                    await self._discard(conn)
                    continue
            return conn
        return await self._connect()

    async def _discard(self, conn: _Conn) -> None:
        conn.client.close()

    def _checkin(self, conn: _Conn) -> None:
        if self._closed or not conn.client.is_connected:
            conn.client.close()
            return
        conn.last_used = time.monotonic()
        self._idle.append(conn)

    async def deliver(self, mail_from: str, recipients: Sequence[str], data: bytes | bytearray, *,
                      crlf_verified: bool = False, dot_free: bool = False,
                      body_8bit: bool = False, smtputf8: bool = False) -> Delivery:
        """One relay attempt within the total deadline; any failure is a Delivery, never a raise.

        The deadline includes the wait for a free connection: a message is 'sending' from its
        admit on, and the recovery sweep counts on no send lasting much past the timeout.
        """
        try:
            async with asyncio.timeout(self.timeout), self._slots:
                self._busy += 1
                try:
                    return await self._attempt(mail_from, recipients, data, crlf_verified, dot_free)
                finally:
                    self._busy -= 1
        except TimeoutError:
            return Delivery(Verdict.TRANSIENT, f"upstream did not answer within {self.timeout:g}s",
                            int(for_timeout()))

    async def _attempt(self, mail_from: str, recipients: Sequence[str], data: bytes | bytearray,
                       verified: bool, dot_free: bool) -> Delivery:
        try:
            conn = await self._checkout()
        except aiosmtplib.SMTPAuthenticationError as exc:
            return Delivery(Verdict.TRANSIENT, f"upstream refused our login: {_reply(exc.code, exc.message)}",
                            int(FailureCode.SYSTEM_OTHER))
        except aiosmtplib.SMTPResponseException as exc:
            return Delivery(_verdict(exc.code), _reply(exc.code, exc.message),
                            int(classify(exc.code, None, exc.message)))
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Delivery(Verdict.TRANSIENT, f"cannot connect to upstream {self.host}:{self.port}: {exc}",
                            int(for_connect_failure()))
        try:
            errors, message = await _transaction(conn.client, mail_from, recipients, data, verified,
                                                   dot_free)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            self._checkin(conn)
            codes = [r.code for r in exc.recipients]
            first = exc.recipients[0]
            # all refused: permanent only if every refusal was permanent
            verdict = Verdict.PERMANENT if all(500 <= c < 600 for c in codes) else Verdict.TRANSIENT
            return Delivery(verdict, _reply(first.code, first.message),
                            int(classify(first.code, None, first.message)))
        except aiosmtplib.SMTPResponseException as exc:
            self._checkin(conn)
            return Delivery(_verdict(exc.code), _reply(exc.code, exc.message),
                            int(classify(exc.code, None, exc.message)))
        except (aiosmtplib.SMTPException, OSError) as exc:
            conn.client.close()
            return Delivery(Verdict.TRANSIENT, f"upstream connection failed: {exc}",
                            int(FailureCode.PROTOCOL_ERROR))
        except asyncio.CancelledError:
            # the deadline hit mid-conversation: this connection's state is unknown
            conn.client.close()
            raise
        self._checkin(conn)
        refused = tuple(errors)
        reply = f"250 {' '.join(message.split())}"[:500]
        if refused:
            reply += "; refused: " + ", ".join(f"{r} ({errors[r].code})" for r in refused)
        return Delivery(Verdict.SENT, reply, None, refused)

    async def close(self) -> None:
        """QUIT idle connections; busy ones are closed when they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                async with asyncio.timeout(2):
                    await conn.client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                conn.client.close()
