"""The SMTP channel: relay's SMTP session parses, the pipeline decides, one table turns outcomes into replies."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import logging
import os
import ssl
import time
import typing
import uuid
from datetime import UTC, datetime

from relay import hygiene, metrics, tlslog
from relay import tags as relay_tags
from relay.addresses import needs_smtputf8
from relay.channels.base import Endpoint, ServerContext
from relay.channels.smtp_data import DataTimeout, read_data
from relay.channels.smtp_session import Envelope, Session, SmtpSession
from relay.config import parse_listen
from relay.domain import Extras, Principal
from relay.errors import ListenError
from relay.limits import AuthThrottle, ConnectionLimit
from relay.outcomes import Outcome, Result
from relay.pipeline import Message, Pipeline, Transaction
from relay.tls import listener_context

__all__ = ["SMTP_REPLIES", "DataTimeout", "RelaySMTP", "SmtpChannel", "SmtpHandler", "smtp_reply"]

log = logging.getLogger(__name__)

# The one table: outcome -> (reply code, default enhanced code, text). docs/contract.md 'SMTP replies'.
SMTP_REPLIES: dict[Outcome, tuple[int, str, str]] = {
    Outcome.SENT: (250, "", "OK: {id}"),
    Outcome.QUEUED: (250, "", "queued: {id}"),
    Outcome.SCHEDULED: (250, "", "scheduled: {id}"),
    Outcome.RATE_LIMITED: (421, "4.7.0", "{reason}"),
    Outcome.INSUFFICIENT_CREDITS: (451, "4.7.1", "{reason}"),
    Outcome.INSUFFICIENT_FUNDS: (451, "4.7.1", "{reason}"),
    Outcome.KEY_MISSING: (535, "5.7.8", "Authentication credentials invalid"),
    Outcome.KEY_INVALID: (535, "5.7.8", "Authentication credentials invalid"),
    Outcome.KEY_DISABLED: (535, "5.7.8", "This API key is disabled. Re-enable or rotate it."),
    Outcome.INVALID: (550, "5.7.1", "{reason}"),
    Outcome.TOO_LARGE: (550, "5.3.4", "{reason}"),
    Outcome.RELAY_FAILED: (550, "5.0.0", "upstream refused the message: {reason}"),
    Outcome.UPSTREAM_UNAVAILABLE: (451, "4.4.1", "upstream unavailable, try again later"),
    Outcome.TEMPORARY: (451, "4.3.0", "temporary failure, try again later"),
    Outcome.IDEMPOTENCY_MISMATCH: (550, "5.7.0", "{reason}"),
    Outcome.IDEMPOTENCY_IN_FLIGHT: (451, "4.7.0", "{reason}, try again later"),
    # issue 13: every recipient was put on the suppression list after its RCPT TO was answered
    Outcome.SUPPRESSED: (550, "5.1.1", "{reason}; nothing was sent or charged"),
}
TEMPORARY_REPLY = "451 4.3.0 temporary failure, try again later"
_MAX_REPLY_TEXT = 400


def _clean(text: str) -> str:
    """Reply text: one line, printable ASCII, bounded."""
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else " " for ch in text)
    flat = " ".join(text.split())
    return flat.encode("ascii", "replace").decode()[:_MAX_REPLY_TEXT]


def smtp_reply(result: Result) -> str:
    """The reply line for a pipeline result."""
    if result.outcome is Outcome.RELAY_FAILED and " 5.6.7" in f" {result.upstream_reply or ''}":
        # the upstream cannot take an internationalized message (no SMTPUTF8): RFC 6531 3.4
        return f"553 5.6.7 upstream cannot accept this internationalized message: {_clean(result.reason)}"
    code, enhanced, template = SMTP_REPLIES[result.outcome]
    text = template.format(id=result.message_id or "", reason=_clean(result.reason))
    enhanced = result.enhanced or enhanced if code >= 400 else ""
    if enhanced and code >= 400:
        enhanced = f"{str(code)[0]}{enhanced[1:]}"  # keep class digit in step with the reply
    return f"{code} {enhanced} {text}" if enhanced else f"{code} {text}"


class SmtpHandler:
    """What every SMTP connection shares: the pipeline, limits, the throttle, the open connections."""

    def __init__(self, pipeline: Pipeline, *, hostname: str, max_message_bytes: int,
                 throttle: AuthThrottle, data_timeout: float = 600.0,
                 connection_limit: ConnectionLimit | None = None) -> None:
        self.pipeline = pipeline
        self.connection_limit = connection_limit or ConnectionLimit(0)
        self.hostname = hostname
        self.max_message_bytes = max_message_bytes
        self.data_timeout = data_timeout
        self.throttle = throttle
        self.connections: set[RelaySMTP] = set()
        self.draining = False

    def answer(self, result: Result) -> str:
        """The reply to a submission's result (MAIL, RCPT, DATA), counted here and only here."""
        return smtp_reply(metrics.counted("smtp", result))

    def gone(self, result: Result) -> None:
        """A send whose client hung up before its answer: counted as if answered."""
        self.answer(result)

    # hooks the sessions call -----------------------------------------------------------------

    async def handle_MAIL(self, server: RelaySMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        """MAIL FROM: rate limit, sender authorization, pre-flight (docs/contract.md: as early as known)."""
        if needs_smtputf8(address) and not envelope.smtp_utf8:
            return "553 5.6.7 Internationalized address requires MAIL FROM ... SMTPUTF8 (RFC 6531)"
        principal: Principal = session.auth_data
        opened = await self.pipeline.begin(principal, address, "smtp")
        if isinstance(opened, Result):
            if opened.outcome is Outcome.RATE_LIMITED:
                server.close_after_reply = True
            return self.answer(opened)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.txn = opened
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: RelaySMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        """RCPT TO: address validity and the recipient limit; duplicates are accepted once."""
        envelope.rcpt_attempts += 1
        if needs_smtputf8(address) and not envelope.smtp_utf8:
            return "553 5.6.7 Internationalized address requires MAIL FROM ... SMTPUTF8 (RFC 6531)"
        if address.lower() in (r.lower() for r in envelope.rcpt_tos):
            return "250 2.1.5 OK (duplicate recipient ignored)"
        problem = self.pipeline.check_recipient(address, len(envelope.rcpt_tos))
        if problem:
            return self.answer(problem)
        txn: Transaction = envelope.txn
        reason = self.pipeline.suppression(txn.principal, address)
        if reason is not None:
            return f"550 5.1.1 <{address}>: recipient is on the suppression list ({reason})"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"


class RelaySMTP(SmtpSession):
    """relay's SMTP session: AUTH with an API key, SIZE and DATA through the pipeline, error handling."""

    def __init__(self, channel: SmtpHandler, *, implicit_tls: bool = False,
                 tls_context: ssl.SSLContext | None = None, auth_required: bool = True,
                 auth_require_tls: bool = True, idle_timeout: float = 300.0, max_commands: int | None = None,
                 proxy_protocol: bool = False) -> None:
        super().__init__(hostname=channel.hostname, idle_timeout=idle_timeout,
                         max_message_bytes=channel.max_message_bytes, tls_context=tls_context,
                         implicit_tls=implicit_tls, auth_mechanisms=("LOGIN", "PLAIN") if auth_required else (),
                         auth_require_tls=auth_require_tls, max_commands=max_commands,
                         proxy_protocol=proxy_protocol)
        self.channel = channel
        self.implicit_tls = implicit_tls
        self.in_data = False
        self.counted_ip: str | None = None  # the address this connection counts against

    # connection bookkeeping for graceful shutdown -------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection against its address (over the limit: 421 at once), track it."""
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        if not self.channel.connection_limit.acquire(ip):
            log.info("SMTP connection from %s refused: too many open connections from it", ip)
            # (uvloop's transports do not subclass asyncio.WriteTransport, though they are one)
            typing.cast(asyncio.WriteTransport, transport).write(
                f"421 4.7.0 {self.hostname} Too many connections from your address, try again later\r\n".encode())
            transport.close()
            return
        self.counted_ip = ip
        super().connection_made(transport)
        self.channel.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        if self.counted_ip is None:
            return  # refused by the connection limit: the session never started
        if self.counted_ip:
            self.channel.connection_limit.release(self.counted_ip)
            self.counted_ip = ""
        self.channel.connections.discard(self)
        super().connection_lost(exc)

    def say_goodbye(self) -> None:
        """Shutdown: tell an idle client and close."""
        if self.transport is not None and not self.transport.is_closing():
            self.close_after_reply = True
            self._reply("421 4.3.2 Service shutting down, try again later")

    async def handle_exception(self, error: Exception) -> str:
        """Anything unexpected is transient for the client and never shows our internals; a
        client's failed TLS is one INFO line, not a traceback."""
        if tlslog.is_tls_failure(error):
            tlslog.log_failure(self.peer_ip, error)
            return TEMPORARY_REPLY
        log.exception("SMTP session error from %s", self.peer_ip)
        return TEMPORARY_REPLY

    # the handler's hooks -----------------------------------------------------------------------

    async def on_mail(self, address: str, options: list[str]) -> str:
        """The handler's MAIL FROM."""
        return await self.channel.handle_MAIL(self, self.session, self.envelope, address, options)

    async def on_rcpt(self, address: str, options: list[str]) -> str:
        """The handler's RCPT TO."""
        return await self.channel.handle_RCPT(self, self.session, self.envelope, address, options)

    # AUTH ---------------------------------------------------------------------------------

    async def _refuse_auth(self) -> None:
        self.close_after_reply = True
        await self.push("421 4.7.0 Too many failed authentication attempts, try again later")

    async def smtp_AUTH(self, arg: str | None) -> None:
        """AUTH PLAIN / LOGIN with the API key as password, throttled per client address."""
        if await self.check_helo_needed("EHLO"):
            return
        if not self.session.extended_smtp or not self.auth_mechanisms:
            await self.push("500 Error: command 'AUTH' not recognized")
            return
        if self.auth_require_tls and not self.tls_active:
            await self.push("538 5.7.11 Encryption required for requested authentication mechanism")
            return
        if self.session.authenticated:
            await self.push("503 5.5.1 Already authenticated")
            return
        args = (arg or "").split()
        if not args or len(args) > 2:
            await self.push("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
            return
        mechanism = args[0].upper()
        if mechanism not in self.auth_mechanisms:
            await self.push("504 5.5.4 Unrecognized authentication type")
            return
        if self.channel.throttle.verdict(self.peer_ip) is None:
            await self._refuse_auth()
            return
        secret = await self.auth_secret(mechanism, args)
        if secret is None:
            return
        # counted from here, whatever happens in parallel (issue 16): the verdict and the count
        # are taken together, before the awaited key check
        async with self.channel.throttle.attempt(self.peer_ip) as attempt:
            if attempt is None:
                await self._refuse_auth()
                return
            result = await self.channel.pipeline.authenticate(secret.decode("utf-8", "replace"))
            if isinstance(result, Result):
                if result.outcome is not Outcome.TEMPORARY:  # a database blip is not a guess
                    attempt.failed()
                    metrics.AUTH_FAILURES.labels("smtp").inc()
                await self.push(smtp_reply(result))
                return
        self.session.authenticated = True
        self.session.auth_data = result
        await self.push("235 2.7.0 Authentication successful")

    async def size_refusal(self, size: int) -> str | None:
        """An oversize SIZE= declaration: 550 as docs/contract.md says (not RFC 1870's 552), counted."""
        problem = self.channel.pipeline.check_size(size)
        return self.channel.answer(problem) if problem else None

    # DATA: read in bulk, strict CRLF.CRLF, limit enforced while reading -----------------------

    async def check_data_allowed(self, arg: str | None) -> bool:
        """The checks before 354: HELO, AUTH, recipients, no argument (answered when refused)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return False
        if not self.envelope.rcpt_tos:
            # RFC 5321 3.3: 554 when every RCPT was refused, 503 when none was even tried
            tried = self.envelope.rcpt_attempts
            await self.push("554 5.5.1 No valid recipients" if tried else "503 5.5.1 Error: need RCPT command")
            return False
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return False
        return True

    async def read_message(self) -> tuple[bytearray | None, bool, bool] | None:
        """354, then the message (smtp_data.read_data); None after a DATA timeout (421 sent, closing)."""
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        deadline = asyncio.get_running_loop().time() + self.channel.data_timeout
        try:
            return await read_data(self, limit=self.channel.max_message_bytes, deadline=deadline)
        except DataTimeout:
            # nothing was admitted: the client hears why, and the connection ends
            log.info("SMTP DATA from %s exceeded %.0f s; closing", self.peer_ip, self.channel.data_timeout)
            self.close_after_reply = True
            await self.push(f"421 4.4.2 {self.hostname} Error: DATA timeout exceeded, closing connection")
            return None

    async def smtp_DATA(self, arg: str | None) -> None:
        """DATA: read, then deliver (here: check, prepare, submit through the pipeline) and answer."""
        if not await self.check_data_allowed(arg):
            return
        self.in_data = True
        try:
            read = await self.read_message()
            if read is None:
                return
            reply = await self.deliver(*read)
            self.envelope = Envelope()
            await self.push(reply)
        finally:
            self.in_data = False
        if self.channel.draining:
            self.say_goodbye()

    async def deliver(self, data: bytearray | None, bare: bool, dotted: bool) -> str:
        """The reply to the message read (None: over the size limit): checked, submitted, answered."""
        txn: Transaction = self.envelope.txn
        if data is None:
            too_large = self.channel.pipeline.check_size(self.channel.max_message_bytes + 1)
            assert too_large is not None
            result = too_large
        elif bare:
            result = Result(Outcome.INVALID, reason="message data contains a bare CR or LF (RFC 5321 2.3.8); "
                            "send CRLF line endings", enhanced="5.6.11")
        elif b"\x00" in data:  # one memchr; a NUL is in no valid message (RFC 5322 2.3)
            result = Result(Outcome.INVALID, reason="message data contains a NUL byte", enhanced="5.6.0")
        else:
            # (the idle timer runs only while the session waits for the client: a slow
            # upstream does not trip it)
            message = self._message(data, dot_free=not dotted)  # data is edited in place
            # the session is cancelled when the client hangs up: once a send may be
            # admitted it runs to its recorded end (sent, or failed and refunded), as over HTTP
            if isinstance(message, Result):  # X-Relay-Tags / X-Relay-Metadata malformed
                result = message
            else:
                result = await self.channel.pipeline.submit_detached(txn, message, self.channel.gone)
            del message
        return self.channel.answer(result)

    def _message(self, data: bytearray, *, dot_free: bool) -> Message | Result:
        """Parse the header facts and add the trace and missing headers, in data itself.

        data is read_data's buffer (smtp_data.py): the message is data[2:].
        """
        assert self.envelope.mail_from is not None
        header = hygiene.header_section(data, 2)
        facts = hygiene.read_header_facts(header)
        try:
            tags, metadata = relay_tags.from_smtp_headers(header)
        except relay_tags.TagError as exc:
            return Result(Outcome.INVALID, reason=str(exc), enhanced="5.6.0")
        fingerprint = None
        if facts.idempotency_key is not None:
            # the payload as the client sent it: envelope and data, before our own header additions
            digest = hashlib.sha256(self.envelope.mail_from.lower().encode() + b"\0")
            digest.update(",".join(sorted(r.lower() for r in self.envelope.rcpt_tos)).encode() + b"\0")
            with memoryview(data) as view:
                digest.update(view[2:])
            fingerprint = digest.digest()
        size = len(data) - 2
        has_body = not data.isspace()  # the leading CRLF is space: an empty message has no body
        now = datetime.now(UTC)
        tls = self.tls_active
        received = hygiene.format_received(
            helo=self.session.host_name, peer_ip=self.peer_ip, hostname=self.hostname,
            protocol="ESMTPSA" if tls else "ESMTPA", queue_id=uuid.uuid4().hex[:16], when=now,
        )
        # in place: a 10 MB message is held once while it is relayed, not twice
        prepared = hygiene.prepare_for_relay_in_place(
            data, 2, received=received, message_id=f"<{uuid.uuid4().hex}@{self.hostname}>",
            date=email.utils.format_datetime(now),
            remove=(*hygiene.REMOVED_HEADERS, *relay_tags.SMTP_HEADERS),
        )
        return Message(
            recipients=tuple(self.envelope.rcpt_tos), from_addresses=facts.from_addresses,
            from_display_addresses=facts.from_display_addresses,
            data=prepared, has_body=has_body, size=size,
            idempotency_key=facts.idempotency_key, fingerprint=fingerprint, subject=facts.subject,
            crlf_verified=True,  # read_data refused bare CR and LF; our added headers end in CRLF
            dot_free=dot_free,  # and no added header line starts with a dot
            body_8bit=self.envelope.body_8bit, smtputf8=self.envelope.smtp_utf8,
            extras=Extras(relay_tags.tags_json(tags), metadata),
        )


def _reason(exc: OSError) -> str:
    """The plain system reason ('Address already in use'), whatever loop raised it."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


class SmtpChannel:
    """The submission listeners (STARTTLS port, and the implicit-TLS port when configured): one
    handler, one AUTH throttle and one set of connections between them."""

    name = "smtp"

    def __init__(self, ctx: ServerContext) -> None:
        self.cfg = ctx.cfg.smtp
        self.handler = SmtpHandler(
            ctx.pipeline, hostname=self.cfg.hostname, max_message_bytes=ctx.cfg.limits.max_message_bytes,
            throttle=ctx.auth_throttle or AuthThrottle(self.cfg.auth_failures_before_delay,
                                                       self.cfg.auth_failures_before_refusal),
            data_timeout=self.cfg.data_timeout_seconds,
            connection_limit=ConnectionLimit(self.cfg.max_connections_per_address),
        )
        self._servers: list[asyncio.Server] = []
        self._endpoints: list[Endpoint] = []

    @property
    def listening(self) -> list[Endpoint]:
        """The bound listeners."""
        return list(self._endpoints)

    def _factory(self, *, tls: ssl.SSLContext | None, implicit: bool) -> RelaySMTP:
        smtp = self.cfg
        return RelaySMTP(
            self.handler, implicit_tls=implicit, tls_context=tls,
            auth_require_tls=not (smtp.allow_plaintext_auth or implicit),
            idle_timeout=smtp.idle_timeout_seconds, max_commands=smtp.max_commands,
            proxy_protocol=smtp.proxy_protocol,
        )

    async def _listen(self, name: str, key: str, address: str, *, starttls: bool, implicit: bool) -> None:
        host, port = parse_listen(key, address)
        loop = asyncio.get_running_loop()
        context = listener_context("smtp", self.cfg.tls_cert, self.cfg.tls_key) if starttls or implicit else None
        try:
            server = await loop.create_server(
                lambda: self._factory(tls=context if starttls else None, implicit=implicit), host, port,
                ssl=context if implicit else None, reuse_address=True, start_serving=True,
            )
        except OSError as exc:
            raise ListenError(f"{key}: cannot listen on {address}: {_reason(exc)}") from None
        bound = server.sockets[0].getsockname()
        self._servers.append(server)
        self._endpoints.append(Endpoint(name, host, int(bound[1])))
        log.info("SMTP %s listening on %s:%s", name, host, bound[1])

    async def start(self) -> None:
        """Bind the STARTTLS listener, and the implicit-TLS one when configured."""
        await self._listen("smtp", "smtp.listen", self.cfg.listen, starttls=bool(self.cfg.tls_cert),
                           implicit=False)
        if self.cfg.implicit_tls_listen:
            await self._listen("smtps", "smtp.implicit_tls_listen", self.cfg.implicit_tls_listen,
                               starttls=False, implicit=True)

    async def stop(self, grace: float) -> None:
        """Stop accepting; idle clients get 421 at once, a DATA in progress may finish within grace."""
        for server in self._servers:
            server.close()
        self.handler.draining = True
        deadline = time.monotonic() + grace
        while self.handler.connections and time.monotonic() < deadline:
            for conn in list(self.handler.connections):
                if not conn.in_data:
                    conn.say_goodbye()
            await asyncio.sleep(0.05)
        for conn in list(self.handler.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1)


def channels(ctx: ServerContext) -> list[SmtpChannel]:
    """The registry's factory: the submission listeners are always on."""
    return [SmtpChannel(ctx)]
