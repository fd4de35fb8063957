"""The SMTP smarthost upstream: a bounded pool of our own client's connections, errors turned into Deliveries."""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import ssl
import time
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from relay.hygiene import has_bare_cr_or_lf
from relay.upstream.base import Delivery, Extension, Verdict
from relay.upstream.classify import FailureCode, classify, for_connect_failure, for_timeout
from relay.upstream.client import (
    AuthRefused,
    BadArgument,
    ClientError,
    RecipientsRefused,
    ReplyError,
    SmtpClient,
)
from relay.upstream.wire import Reply, WireError

_DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
_CHECK_IDLE_AFTER = 5.0  # a connection idle longer than this gets a NOOP before reuse
_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")


def _reply(code: int, message: str) -> str:
    """An upstream reply as relay records and quotes it: one line of printable text (a NUL from the
    upstream would make PostgreSQL refuse the outcome's row, and the outcome would never land)."""
    if not message.isprintable():
        message = "".join(ch if ch.isprintable() else " " for ch in message)
    return f"{code} {' '.join(message.split())}"[:500]


def _verdict(code: int) -> Verdict:
    return Verdict.PERMANENT if 500 <= code < 600 else Verdict.TRANSIENT


def _dot_stuffed(data: bytes | bytearray, verified: bool = False,
                 dot_free: bool = False) -> bytes | bytearray | None:
    """DATA content for clean CRLF data, dot-stuffed and ending in CRLF; None if not clean.

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


def _content(data: bytes | bytearray, verified: bool, dot_free: bool) -> bytes | bytearray:
    """What goes after DATA: data as it is where clean; bare CRs and LFs made CRLF first otherwise
    (the queue's older bodies, a caller that did not check), so no line ending is ambiguous."""
    stuffed = _dot_stuffed(data, verified, dot_free)
    if stuffed is None:
        stuffed = _dot_stuffed(_LINE_ENDINGS.sub(b"\r\n", data), verified=True)
        assert stuffed is not None
    return stuffed


@functools.cache
def _fqdn() -> str:
    """This host's name for EHLO where none is configured; looked up once (it may ask DNS)."""
    name = socket.getfqdn()
    return name if name.isascii() and name else "localhost"


def _needs_smtputf8(mail_from: str, recipients: Sequence[str]) -> bool:
    return not (mail_from.isascii() and all(r.isascii() for r in recipients))


class _Conn:
    """A pooled client and when it was last used."""

    __slots__ = ("client", "last_used")

    def __init__(self, client: SmtpClient) -> None:
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
        self.local_hostname = local_hostname or _fqdn()
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
        client = await SmtpClient.connect(
            self.host, self.port, local_hostname=self.local_hostname, tls=self._tls,
            implicit_tls=self.scheme == "smtps",
            # required: a server without STARTTLS is an error, never a plaintext fallback
            starttls=self.scheme == "smtp+starttls",
            username=self.username, password=self.password)
        return _Conn(client)

    async def _checkout(self) -> _Conn:
        while self._idle:
            conn = self._idle.pop()
            if not conn.client.usable:
                continue
            if time.monotonic() - conn.last_used > _CHECK_IDLE_AFTER:
                try:
                    await conn.client.noop()
                except (ClientError, WireError):
                    conn.client.close()
                    continue
                except BaseException:
                    conn.client.close()  # cancelled mid-NOOP: its reply would answer the next command
                    raise
            return conn
        return await self._connect()

    def _checkin(self, conn: _Conn) -> None:
        if self._closed or not conn.client.usable:
            conn.client.close()
            return
        conn.last_used = time.monotonic()
        self._idle.append(conn)

    async def deliver(self, mail_from: str, recipients: Sequence[str], data: bytes | bytearray, *,
                      crlf_verified: bool = False, dot_free: bool = False, body_8bit: bool | None = None,
                      smtputf8: bool = False) -> Delivery:
        """One relay attempt within the total deadline; any failure is a Delivery, never a raise.

        The deadline includes the wait for a free connection: a message is 'sending' from its
        admit on, and the recovery sweep counts on no send lasting much past the timeout.
        BODY=8BITMIME goes with 8-bit data (body_8bit, or where None a byte above 127 found here),
        SMTPUTF8 with a non-ASCII envelope (or smtputf8); see Upstream.deliver for an upstream
        lacking them.
        """
        eight_bit = not data.isascii() if body_8bit is None else body_8bit
        utf8 = smtputf8 or _needs_smtputf8(mail_from, recipients)
        try:
            async with asyncio.timeout(self.timeout), self._slots:
                self._busy += 1
                try:
                    return await self._attempt(mail_from, recipients, data, crlf_verified, dot_free,
                                               eight_bit, utf8)
                finally:
                    self._busy -= 1
        except TimeoutError:
            return Delivery(Verdict.TRANSIENT, f"upstream did not answer within {self.timeout:g}s",
                            int(for_timeout()))

    async def _attempt(self, mail_from: str, recipients: Sequence[str], data: bytes | bytearray,
                       verified: bool, dot_free: bool, eight_bit: bool, utf8: bool) -> Delivery:
        try:
            conn = await self._checkout()
        except AuthRefused as exc:
            refusal = _reply(exc.reply.code, exc.reply.message)
            return Delivery(Verdict.TRANSIENT, f"upstream refused our login: {refusal}", int(FailureCode.SYSTEM_OTHER))
        except ReplyError as exc:
            return _refusal(exc.reply)
        except (ClientError, WireError, OSError) as exc:
            return Delivery(Verdict.TRANSIENT, f"cannot connect to upstream {self.host}:{self.port}: {exc}",
                            int(for_connect_failure()))
        client = conn.client
        lacking = self._lacking(client, eight_bit, utf8)
        if lacking is not None:
            self._checkin(conn)  # nothing was said on it: good for the next message
            return lacking
        options = [f"SIZE={len(data)}".encode()] if client.offers("size") else []
        if eight_bit:
            options.append(b"BODY=8BITMIME")
        if utf8:
            options.append(b"SMTPUTF8")
        try:
            errors, final = await client.send(mail_from, recipients, _content(data, verified, dot_free), options)
        except RecipientsRefused as exc:
            self._checkin(conn)
            replies = [reply for _r, reply in exc.refusals]
            first = replies[0]
            # all refused: permanent only if every refusal was permanent
            verdict = Verdict.PERMANENT if all(500 <= r.code < 600 for r in replies) else Verdict.TRANSIENT
            return Delivery(verdict, _reply(first.code, first.message),
                            int(classify(first.code, None, first.message)))
        except ReplyError as exc:
            self._checkin(conn)
            return _refusal(exc.reply)
        except BadArgument as exc:
            self._checkin(conn)  # refused before a byte was written
            return Delivery(Verdict.PERMANENT, f"not sent: {exc}", int(FailureCode.BAD_ADDRESS_FORMAT))
        except (ClientError, WireError, OSError) as exc:
            client.close()
            return Delivery(Verdict.TRANSIENT, f"upstream connection failed: {exc}",
                            int(FailureCode.PROTOCOL_ERROR))
        except asyncio.CancelledError:
            # the deadline hit mid-conversation: this connection's state is unknown
            client.close()
            raise
        self._checkin(conn)
        refused = tuple(errors)
        reply = _reply(250, final.message)
        if refused:
            reply += "; refused: " + ", ".join(f"{r} ({errors[r].code})" for r in refused)
        return Delivery(Verdict.SENT, reply, None, refused)

    def _lacking(self, client: SmtpClient, eight_bit: bool, utf8: bool) -> Delivery | None:
        """A permanent failure when the message needs an extension the upstream does not offer.

        8-bit content is refused rather than converted to quoted-printable: converting means
        rewriting MIME structure (and would break a DKIM signature made before relaying), and
        every mainstream upstream offers 8BITMIME (RFC 6152) anyway.
        """
        if utf8 and not client.offers("smtputf8"):
            return _lacking(Extension.SMTPUTF8, Reply(553, "5.6.7 the upstream does not accept internationalized "
                                                           "addresses or headers (no SMTPUTF8)"))
        if eight_bit and not client.offers("8bitmime"):
            return _lacking(Extension.EIGHTBITMIME, Reply(554, "5.6.3 the upstream does not accept 8-bit "
                                                               "messages (no 8BITMIME)"))
        return None

    async def close(self) -> None:
        """QUIT idle connections; busy ones are closed when they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                async with asyncio.timeout(2):
                    await conn.client.quit()
            except (ClientError, WireError, OSError, TimeoutError):
                conn.client.close()


def _refusal(reply: Reply) -> Delivery:
    """The upstream said no: permanent for 5xx, transient otherwise, classified by its text."""
    return Delivery(_verdict(reply.code), _reply(reply.code, reply.message),
                    int(classify(reply.code, None, reply.message)))


def _lacking(extension: Extension, reply: Reply) -> Delivery:
    return Delivery(Verdict.PERMANENT, _reply(reply.code, reply.message),
                    int(classify(reply.code, None, reply.message)), lacking=extension)
