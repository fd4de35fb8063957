"""One SMTP server connection (RFC 5321) as an asyncio protocol: relay's own, in place of aiosmtpd.

The protocol owns its input buffer, so commands are read straight from it (pipelining, RFC
2920: replies are written together when the session next waits for input), DATA is read in bulk
(relay/channels/smtp_data.py) and the bytes after its end marker go back to the command reader.
What a listener decides (AUTH, what MAIL/RCPT/DATA mean) is in subclasses: RelaySMTP in
relay/channels/smtp.py and the inbound listener's. Replies keep RFC 5321 codes: 500/501 syntax,
503 bad sequence, 530 authentication required; the idle timer says 421 4.4.2 before it closes
(RFC 5321 4.5.3.2) and runs only while the session waits for the client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar

from relay import tlslog
from relay.channels import proxy_protocol
from relay.channels.proxy_protocol import ProxyData
from relay.channels.smtp_address import parse_params, parse_path

log = logging.getLogger(__name__)

COMMAND_LIMIT = 512  # RFC 5321 4.5.3.1.4, the whole line
MAIL_LIMIT = COMMAND_LIMIT + 26 + 10 + 14  # + SIZE=, SMTPUTF8 and BODY= (RFC 1870, 6531, 6152)
AUTH_LIMIT = 12288  # RFC 4954 4: an AUTH line or a response to a challenge
BOGUS_LIMIT = 5  # unrecognized commands before the session is ended
_HIGH_WATER = 1 << 19  # stop reading from the socket while this much input waits
PROXY_TIMEOUT = 5.0
_OUT_BATCH = 1 << 16  # replies held back for one write at most


@dataclass
class Session:
    """What a connection has said about itself."""

    peer: Any = None  # the socket's peer address, as the transport gives it
    host_name: str | None = None  # HELO/EHLO name
    extended_smtp: bool = False
    authenticated: bool = False
    auth_data: Any = None  # what the listener's AUTH produced (relay: a Principal)
    proxy_data: ProxyData | None = None


@dataclass
class Envelope:
    """One mail transaction: MAIL FROM to the end of DATA (or RSET)."""

    mail_from: str | None = None
    mail_options: list[str] = field(default_factory=list)
    rcpt_tos: list[str] = field(default_factory=list)
    rcpt_options: list[str] = field(default_factory=list)
    rcpt_attempts: int = 0  # RCPT commands tried, refused ones included (554 vs 503 at DATA)
    smtp_utf8: bool = False
    body_8bit: bool = False  # BODY=8BITMIME (RFC 6152)
    txn: Any = None  # the listener's transaction state (relay: the pipeline's Transaction)
    extra: dict[str, Any] = field(default_factory=dict)  # a listener's own per-transaction state


Verb = Callable[["SmtpSession", str | None], Coroutine[Any, Any, None]]


class SmtpSession(asyncio.Protocol):
    """One connection: reading, timers, STARTTLS, PROXY, the command loop and the standard verbs.

    A verb is a coroutine method smtp_<VERB>(arg); subclasses add or replace them.
    """

    verbs: ClassVar[dict[str, Verb]] = {}
    ident = "relay"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.verbs = {name[5:]: getattr(cls, name) for name in dir(cls) if name.startswith("smtp_")}

    def __init__(self, *, hostname: str, idle_timeout: float, max_message_bytes: int,
                 tls_context: ssl.SSLContext | None = None, implicit_tls: bool = False,
                 auth_mechanisms: tuple[str, ...] = (), auth_require_tls: bool = True,
                 max_commands: int | None = None, proxy_protocol: bool = False) -> None:
        self.hostname = hostname
        self.idle_timeout = idle_timeout
        self.max_message_bytes = max_message_bytes
        self.tls_context = tls_context
        self.tls_active = implicit_tls
        self.auth_mechanisms = auth_mechanisms
        self.auth_require_tls = auth_require_tls
        self.max_commands = max_commands
        self.proxy_protocol = proxy_protocol
        self.session = Session()
        self.envelope = Envelope()
        self.transport: asyncio.Transport | None = None
        self.close_after_reply = False  # set before a push: that reply is the last (421)
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._eof = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._write_paused: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # asyncio protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the session."""
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        self.session.peer = transport.get_extra_info("peername")
        self._task = self._loop.create_task(self._run())

    def data_received(self, data: bytes) -> None:
        """Buffer what came; too much unread input pauses the socket."""
        self._buffer += data
        if len(self._buffer) > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        """The client stopped sending: what is buffered is still answered, then the session ends
        (a TLS transport cannot stay half-open: it closes at once)."""
        self._eof = True
        self._wake()
        return not self.tls_active

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: end the session (a send already admitted finishes on its own)."""
        self._eof = True
        self._closing = True
        self._wake()
        if self._write_paused is not None and not self._write_paused.done():
            self._write_paused.set_result(None)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.transport = None

    def pause_writing(self) -> None:
        """The transport's write buffer is full: push() waits."""
        if self._write_paused is None or self._write_paused.done():
            self._write_paused = self._loop.create_future()

    def resume_writing(self) -> None:
        """The write buffer drained."""
        if self._write_paused is not None and not self._write_paused.done():
            self._write_paused.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # input -------------------------------------------------------------------------------

    async def _wait_input(self, deadline: float | None = None, *, idle: bool = True,
                          idle_at: float | None = None) -> None:
        """Wait for more bytes; replies so far go out first. The idle timer runs meanwhile: from
        now, or from idle_at (a command line must be complete within one idle period)."""
        self.flush()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        waiter = self._waiter = self._loop.create_future()
        if idle_at is None:
            idle_at = self._loop.time() + self.idle_timeout
        timer = self._loop.call_at(idle_at, self._idle_timeout) if idle else None
        try:
            if deadline is None:
                await waiter
            else:
                async with asyncio.timeout_at(deadline):
                    await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None

    def _idle_timeout(self) -> None:
        """RFC 5321 4.5.3.2: say why, then close."""
        log.info("SMTP client %s idle for %.0f s; closing", self.peer_ip, self.idle_timeout)
        self.close_after_reply = True
        self._reply(f"421 4.4.2 {self.hostname} Error: timeout exceeded")

    async def read_line(self, limit: int) -> bytes | None:
        """One line without its line end; None at end of input; b'\\0' marks a line over limit
        (the whole line was read and dropped)."""
        too_long = False
        searched = 0
        idle_at: float | None = None
        while True:
            end = self._buffer.find(b"\n", searched)
            if end >= 0:
                if too_long or end > limit + 1:
                    del self._buffer[:end + 1]
                    return b"\0"
                line = bytes(self._buffer[:end - 1 if end and self._buffer[end - 1] == 13 else end])
                del self._buffer[:end + 1]
                return line
            if len(self._buffer) > limit + 1:  # drop what is kept of an overlong line
                del self._buffer[:]
                too_long = True
            searched = len(self._buffer)
            if self._eof:
                return None
            if idle_at is None:  # a trickle of bytes without a line end does not restart the timer
                idle_at = self._loop.time() + self.idle_timeout
            await self._wait_input(idle_at=idle_at)

    async def read(self, n: int, deadline: float | None = None) -> bytes:
        """Up to n buffered bytes, waiting for some (b'' at end of input); TimeoutError after deadline."""
        while not self._buffer:
            if self._eof:
                return b""
            await self._wait_input(deadline)
        if len(self._buffer) <= n:
            chunk = bytes(self._buffer)
            self._buffer.clear()
        else:
            chunk = bytes(self._buffer[:n])
            del self._buffer[:n]
        return chunk

    def unread(self, data: bytes | bytearray) -> None:
        """Put bytes back in front of the input (what followed DATA's end marker)."""
        self._buffer[0:0] = data

    # output ------------------------------------------------------------------------------

    def _reply(self, status: str | bytes) -> None:
        """Queue one reply; written at the next flush. After close_after_reply, flush and close."""
        # (an address echoed back may hold undecodable bytes, kept as surrogates: never an error here)
        line = (status.encode("utf-8", "replace") if isinstance(status, str) else status) + b"\r\n"
        self._out.append(line)
        self._out_bytes += len(line)
        if self.close_after_reply:
            self.close()

    async def push(self, status: str | bytes) -> None:
        """Send a reply (batched with the others until the session waits for input)."""
        self._reply(status)
        if self._out_bytes > _OUT_BATCH:  # a long pipelined burst: its replies go out as they come
            self.flush()
        if self._write_paused is not None and not self._write_paused.done():
            self.flush()
            try:  # a client that sends but never reads is idle too
                async with asyncio.timeout(self.idle_timeout):
                    await asyncio.shield(self._write_paused)
            except TimeoutError:
                log.info("SMTP client %s read no replies for %.0f s; closing", self.peer_ip, self.idle_timeout)
                if self.transport is not None:
                    self.transport.abort()
                raise ConnectionResetError("client does not read") from None

    def flush(self) -> None:
        """Write the queued replies, as one write."""
        if self._out:
            out, self._out, self._out_bytes = self._out, [], 0
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    def close(self) -> None:
        """Write what is queued and close; the command loop stops."""
        self.flush()
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    # the session -------------------------------------------------------------------------

    @property
    def peer_ip(self) -> str:
        """The client's address, as text (the proxied client's, behind a PROXY-protocol balancer)."""
        proxied = self.session.proxy_data
        if proxied is not None and proxied.src_addr is not None:
            return proxied.src_addr
        peer = self.session.peer
        return str(peer[0]) if isinstance(peer, tuple) else str(peer or "unknown")

    async def _run(self) -> None:
        try:
            if self.proxy_protocol and not await self._read_proxy():
                self.close()
                return
            await self.push(f"220 {self.hostname} ESMTP {self.ident}")
            await self._command_loop()
        except asyncio.CancelledError:
            pass  # the connection is gone
        except ConnectionError:
            self.close()
        except Exception:
            log.exception("SMTP session with %s failed", self.peer_ip)
            self.close()

    async def _read_proxy(self) -> bool:
        """The PROXY header that must come first; False: refuse the connection."""
        deadline = self._loop.time() + PROXY_TIMEOUT
        try:
            while (size := proxy_protocol.needed(self._buffer)) <= 0 or len(self._buffer) < size:
                if size < 0 or self._eof:
                    log.info("SMTP client %s sent no well-formed PROXY header", self.peer_ip)
                    return False
                await self._wait_input(deadline, idle=False)
        except TimeoutError:
            log.info("SMTP client %s sent no PROXY header in %.0f s", self.peer_ip, PROXY_TIMEOUT)
            return False
        header = bytes(self._buffer[:size])
        del self._buffer[:size]
        try:
            data = proxy_protocol.parse(header)
        except proxy_protocol.ProxyError as exc:
            log.info("SMTP client %s: %s", self.peer_ip, exc)
            return False
        self.session.proxy_data = data
        return await self.accept_proxy(data)

    async def accept_proxy(self, data: ProxyData) -> bool:
        """Is this proxied connection served? By default when it names a client."""
        return data.src_addr is not None

    async def _command_loop(self) -> None:
        budget: dict[str, int] = {}
        bogus = BOGUS_LIMIT
        while not self._closing:
            line = await self.read_line(AUTH_LIMIT)
            if line is None:
                self.close()
                return
            if line == b"\0":
                await self.push("500 Command line too long")
                continue
            if not line:
                await self.push("500 Error: bad syntax")
                continue
            verb_bytes, _, arg_bytes = line.partition(b" ")
            try:
                verb = verb_bytes.upper().decode("ascii")
            except UnicodeDecodeError:
                await self.push("500 Error: bad syntax")
                continue
            limit = MAIL_LIMIT if verb == "MAIL" and self.session.extended_smtp else \
                AUTH_LIMIT if verb == "AUTH" else COMMAND_LIMIT
            if len(line) > limit:
                await self.push("500 Command line too long")
                continue
            if self.max_commands is not None:
                left = budget.get(verb, self.max_commands)
                if left < 1:
                    log.info("SMTP client %s sent %s too many times", self.peer_ip, verb)
                    self.close_after_reply = True
                    await self.push(f"421 4.7.0 {verb} sent too many times")
                    return
                budget[verb] = left - 1
            method = self.verbs.get(verb)
            if method is None or not self.verb_available(verb):
                bogus -= 1
                if bogus < 1:
                    self.close_after_reply = True
                    await self.push("502 5.5.1 Too many unrecognized commands, goodbye.")
                    return
                await self.push(f'500 Error: command "{verb}" not recognized')
                continue
            # arguments keep their bytes (surrogateescape): UTF-8 under SMTPUTF8, anything else intact
            arg = arg_bytes.strip().decode("utf-8", "surrogateescape") or None
            try:
                await method(self, arg)
            except (asyncio.CancelledError, ConnectionError):
                raise
            except Exception as error:
                self.envelope = Envelope()
                await self.push(await self.handle_exception(error))

    def verb_available(self, verb: str) -> bool:
        """Is this verb offered on this connection (STARTTLS with a certificate; inside TLS it is 503)?"""
        return verb != "STARTTLS" or self.tls_context is not None or self.tls_active

    async def handle_exception(self, error: Exception) -> str:
        """The reply to a verb that raised: transient, and never our internals."""
        log.exception("SMTP session error from %s", self.peer_ip)
        return "451 4.3.0 temporary failure, try again later"

    # hooks for listeners -------------------------------------------------------------------

    async def on_ehlo(self, hostname: str, lines: list[str]) -> list[str]:
        """The EHLO reply lines (the last without '-'); a listener may add its own."""
        return lines

    async def size_refusal(self, size: int) -> str | None:
        """The reply refusing a MAIL FROM's declared SIZE= (None: go on); a listener has its own limit."""
        return None

    async def on_mail(self, address: str, options: list[str]) -> str:
        """MAIL FROM, after the syntax checks: the reply."""
        self.envelope.mail_from = address
        self.envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def on_rcpt(self, address: str, options: list[str]) -> str:
        """RCPT TO, after the syntax checks: the reply."""
        self.envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    # checks --------------------------------------------------------------------------------

    async def check_helo_needed(self, helo: str = "HELO") -> bool:
        """503 until the client has said HELO/EHLO."""
        if not self.session.host_name:
            await self.push(f"503 Error: send {helo} first")
            return True
        return False

    async def check_auth_needed(self, verb: str) -> bool:
        """530 when this listener requires AUTH and the client has not authenticated."""
        if self.auth_mechanisms and not self.session.authenticated:
            await self.push("530 5.7.0 Authentication required")
            return True
        return False

    # the standard verbs ----------------------------------------------------------------------

    async def smtp_HELO(self, arg: str | None) -> None:
        """HELO hostname."""
        if not arg:
            await self.push("501 Syntax: HELO hostname")
            return
        self.envelope = Envelope()
        self.session.extended_smtp = False
        self.session.host_name = arg
        await self.push(f"250 {self.hostname}")

    async def smtp_EHLO(self, arg: str | None) -> None:
        """EHLO hostname: the extensions, in one write."""
        if not arg:
            await self.push("501 Syntax: EHLO hostname")
            return
        self.envelope = Envelope()
        self.session.extended_smtp = True
        self.session.host_name = arg
        lines = [f"250-{self.hostname}", f"250-SIZE {self.max_message_bytes}", "250-8BITMIME", "250-SMTPUTF8"]
        if self.tls_context is not None and not self.tls_active:
            lines.append("250-STARTTLS")
        if self.auth_mechanisms and (self.tls_active or not self.auth_require_tls):
            lines.append("250-AUTH " + " ".join(sorted(self.auth_mechanisms)))
        lines.append("250-PIPELINING")
        lines.append("250 HELP")
        await self.push("\r\n".join(await self.on_ehlo(arg, lines)))

    async def smtp_NOOP(self, arg: str | None) -> None:
        """NOOP."""
        await self.push("250 OK")

    async def smtp_QUIT(self, arg: str | None) -> None:
        """QUIT: 221, then close."""
        if arg:
            await self.push("501 Syntax: QUIT")
            return
        self.close_after_reply = True
        await self.push("221 Bye")

    async def smtp_RSET(self, arg: str | None) -> None:
        """RSET: a new transaction."""
        if arg:
            await self.push("501 Syntax: RSET")
            return
        self.envelope = Envelope()
        await self.push("250 OK")

    async def smtp_VRFY(self, arg: str | None) -> None:
        """VRFY: nothing is verified (RFC 5321 3.5.3: 252)."""
        if await self.check_auth_needed("VRFY"):
            return
        if not arg:
            await self.push("501 Syntax: VRFY <address>")
            return
        await self.push("252 Cannot VRFY user, but will accept message and attempt delivery")

    async def smtp_HELP(self, arg: str | None) -> None:
        """HELP: the verbs offered."""
        if await self.check_auth_needed("HELP"):
            return
        verbs = " ".join(sorted(v for v in self.verbs if self.verb_available(v)))
        await self.push(f"250 Supported commands: {verbs}")

    async def smtp_STARTTLS(self, arg: str | None) -> None:
        """STARTTLS, once (RFC 3207): input buffered before the handshake is dropped, since a
        client cannot have sent it after the handshake (command injection, RFC 3207 5)."""
        if arg:
            await self.push("501 Syntax: STARTTLS")
            return
        if self.tls_active:
            await self.push("503 5.5.1 Error: TLS already active")
            return
        assert self.tls_context is not None and self.transport is not None
        await self.push("220 Ready to start TLS")
        self.flush()
        self._buffer.clear()
        try:
            transport = await self._loop.start_tls(self.transport, self, self.tls_context, server_side=True)
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError, TypeError) as exc:
            tlslog.log_failure(self.peer_ip, exc)
            self._closing = True
            if self.transport is not None:
                self.transport.abort()
            return
        if transport is None:  # the connection closed during the handshake
            self._closing = True
            return
        self.transport = transport
        self.tls_active = True
        # RFC 3207 4.2: the client starts again from EHLO
        self.session = Session(peer=self.session.peer, proxy_data=self.session.proxy_data)
        self.envelope = Envelope()

    async def smtp_MAIL(self, arg: str | None) -> None:
        """MAIL FROM:<path> [parameters] (SIZE, BODY, SMTPUTF8)."""
        if await self.check_helo_needed() or await self.check_auth_needed("MAIL"):
            return
        syntax = "501 Syntax: MAIL FROM: <address>" + (" [SP <mail-parameters>]" if self.session.extended_smtp else "")
        if not arg or arg[:5].upper() != "FROM:":
            await self.push(syntax)
            return
        parsed = parse_path(arg[5:])
        if parsed is None:
            await self.push("553 5.1.3 Error: malformed address" if arg[5:].strip() else syntax)
            return
        address, rest = parsed
        if rest and not self.session.extended_smtp:
            await self.push(syntax)
            return
        if self.envelope.mail_from:
            await self.push("503 5.5.1 Error: nested MAIL command")
            return
        options = rest.upper().split()
        params = parse_params(rest.upper())
        if params is None:
            await self.push(syntax)
            return
        body = params.pop("BODY", "7BIT")
        if body not in ("7BIT", "8BITMIME"):
            await self.push("501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME")
            return
        smtputf8 = params.pop("SMTPUTF8", False)
        if smtputf8 is not False and smtputf8 is not True:
            await self.push("501 5.5.4 Error: SMTPUTF8 takes no arguments")
            return
        size = params.pop("SIZE", None)
        if size is not None and (size is True or not str(size).isdigit()):
            await self.push(syntax)
            return
        if params:
            await self.push("555 5.5.4 MAIL FROM parameters not recognized or not implemented")
            return
        refusal = None if size is None else await self.size_refusal(int(size))
        if refusal:
            await self.push(refusal)
            return
        self.envelope.smtp_utf8 = smtputf8
        self.envelope.body_8bit = body == "8BITMIME"
        await self.push(await self.on_mail(address, options))

    async def smtp_RCPT(self, arg: str | None) -> None:
        """RCPT TO:<path> (no parameters are offered)."""
        if await self.check_helo_needed() or await self.check_auth_needed("RCPT"):
            return
        if not self.envelope.mail_from:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        syntax = "501 Syntax: RCPT TO: <address>" + (" [SP <mail-parameters>]" if self.session.extended_smtp else "")
        if not arg or arg[:3].upper() != "TO:":
            await self.push(syntax)
            return
        parsed = parse_path(arg[3:])
        if parsed is None:
            await self.push("553 5.1.3 Error: malformed address" if arg[3:].strip() else syntax)
            return
        address, rest = parsed
        if rest:
            params = parse_params(rest.upper())
            await self.push(syntax if params is None or not self.session.extended_smtp else
                            "555 5.5.4 RCPT TO parameters not recognized or not implemented")
            return
        await self.push(await self.on_rcpt(address, []))

    # AUTH mechanics (the listener decides what a secret is worth) ------------------------------

    async def challenge(self, text: str) -> bytes | None:
        """334 with text in base64, and the client's decoded answer; None when it aborts or garbles."""
        await self.push("334 " + base64.b64encode(text.encode()).decode())
        line = await self.read_line(AUTH_LIMIT)
        if line is None:
            raise ConnectionResetError("connection closed during AUTH")
        blob = line.strip()
        if blob == b"*":
            await self.push("501 5.7.0 Auth aborted")
            return None
        try:
            return base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            await self.push("501 5.5.2 Can't decode base64")
            return None

    async def auth_secret(self, mechanism: str, args: list[str]) -> bytes | None:
        """The password of an AUTH PLAIN / LOGIN exchange (initial response or challenge form);
        None when the client aborted or sent garbage (it has been answered)."""
        initial: bytes | None = None
        if len(args) == 2:
            try:
                initial = base64.b64decode(args[1], validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Can't decode base64")
                return None
        if mechanism == "PLAIN":
            blob = initial if initial is not None else await self.challenge("")
            if blob is None:
                return None
            parts = blob.split(b"\x00")
            if len(parts) != 3:
                await self.push("501 5.5.2 Can't split auth value")
                return None
            return parts[2]
        if initial is None and await self.challenge("User Name\x00") is None:
            return None
        return await self.challenge("Password\x00")


SmtpSession.verbs = {name[5:]: getattr(SmtpSession, name) for name in dir(SmtpSession) if name.startswith("smtp_")}
