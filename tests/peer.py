"""A real upstream SMTP peer for tests: listens on port 0, records what it gets, answers as told."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Received:
    """One message as the peer got it."""

    mail_from: str
    recipients: list[str]
    data: bytes
    mail_options: list[str] = field(default_factory=list)  # MAIL FROM parameters (SIZE=, BODY=, SMTPUTF8)


@dataclass
class PeerHandler:
    """Replies are settable per stage; by default everything is accepted."""

    messages: list[Received] = field(default_factory=list)
    mail_reply: str | None = None
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    data_delay: float = 0.0
    mail_delay: float = 0.0
    connections: int = 0
    mail_seen: asyncio.Event = field(default_factory=asyncio.Event)
    mail_options: list[list[str]] = field(default_factory=list)
    pipelining: bool = True  # offered in the EHLO reply, as Postfix and most servers offer it
    eightbitmime: bool = True  # aiosmtpd always offers 8BITMIME; False takes it out of the EHLO reply
    logins: list[tuple[str, str, str]] = field(default_factory=list)  # (mechanism, user, password) tried

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves this to a handler that has the hook
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        if not self.eightbitmime:
            responses = [line for line in responses if line[4:].upper() != "8BITMIME"]
        return responses

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        self.mail_seen.set()
        self.mail_options.append(list(options))
        if self.mail_delay:
            await asyncio.sleep(self.mail_delay)
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)  # aiosmtpd leaves this to a handler that has the hook
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.data_reply:
            return self.data_reply
        self.messages.append(Received(envelope.mail_from or "", list(envelope.rcpt_tos),
                                      bytes(envelope.original_content or b""), list(envelope.mail_options)))
        return "250 2.0.0 Ok: queued as PEER1"


class _CountingSMTP(SMTP):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._original_transport is None:
            self.event_handler.connections += 1


class Peer:
    """The peer server; `url` is what the relay's upstream.url should say."""

    def __init__(self, *, tls: ssl.SSLContext | None = None, require_starttls: bool = False,
                 size_limit: int | None = None, smtputf8: bool = False, implicit_tls: bool = False,
                 login: tuple[str, str] | None = None, auth_exclude: frozenset[str] = frozenset()) -> None:
        """tls: STARTTLS with this context (or TLS from the first byte with implicit_tls);
        smtputf8: offer SMTPUTF8 (RFC 6531); login: offer AUTH (LOGIN, PLAIN but auth_exclude)
        and accept only this user and password, recording every attempt in handler.logins."""
        self.handler = PeerHandler()
        self.size_limit = size_limit
        self.tls = tls
        self.require_starttls = require_starttls
        self.smtputf8 = smtputf8
        self.implicit_tls = implicit_tls
        self.login = login
        self.auth_exclude = auth_exclude
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Peer:
        loop = asyncio.get_running_loop()
        auth: dict[str, object] = {}
        if self.login is not None:
            auth = {"authenticator": self._authenticate, "auth_require_tls": False,
                    "auth_exclude_mechanism": self.auth_exclude}
        self.server = await loop.create_server(
            lambda: _CountingSMTP(self.handler, hostname="peer.test",
                                  tls_context=None if self.implicit_tls else self.tls,
                                  require_starttls=self.require_starttls, data_size_limit=self.size_limit,
                                  enable_SMTPUTF8=self.smtputf8, loop=loop, **auth),  # type: ignore[arg-type]
            "127.0.0.1", 0, ssl=self.tls if self.implicit_tls else None,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: object) -> AuthResult:
        assert isinstance(auth_data, LoginPassword) and self.login is not None
        user, password = auth_data.login.decode(), auth_data.password.decode()
        self.handler.logins.append((mechanism, user, password))
        ok = (user, password) == self.login
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
