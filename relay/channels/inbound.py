"""The inbound listener: mail for the apps' routes, POSTed while the sending server waits in DATA.

relay's SMTP session parses (the submission listener's RelaySMTP, so the same hardened DATA reader,
error handling and shutdown; docs/smtp-session.md), the routes decide who gets each recipient,
relay/inbound/deliver.py POSTs,
and relay/inbound/replies.py turns the apps' answers into the one reply to DATA. No AUTH; nothing
is ever relayed anywhere: a recipient no route (and no claimant) takes is refused at RCPT TO.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Counter, Histogram

from relay import hygiene
from relay.channels.base import Endpoint, ServerContext
from relay.channels.smtp import RelaySMTP, SmtpChannel, SmtpHandler
from relay.channels.smtp_session import Envelope, Session
from relay.config import parse_listen
from relay.errors import ListenError, StoreUnavailable
from relay.inbound import claims, deliver, payload, replies
from relay.inbound.claims import Claimant
from relay.inbound.config import InboundConfig
from relay.inbound.log import InboundRecord
from relay.inbound.routes import Route, first_match
from relay.limits import AuthThrottle, ConnectionLimit
from relay.outbound import ssrf
from relay.outbound.client import HttpClient
from relay.store.store import Store
from relay.tls import listener_context

log = logging.getLogger(__name__)

MESSAGES = Counter("relay_inbound_total", "Inbound deliveries per route, by outcome "
                   "(delivered, refused, deferred, oversize, invalid)", ["outcome"])
POST_SECONDS = Histogram("relay_inbound_post_seconds", "Time from the end of DATA to the app's answer",
                         buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RCPT_REFUSED = Counter("relay_inbound_rcpt_refused_total", "RCPT TO refused by the inbound listener", ["reason"])

TEMPORARY = "451 4.3.0 temporary failure, try again later"
BARE_LINE_END = ("550 5.6.11 message data contains a bare CR or LF (RFC 5321 2.3.8); "
                 "send CRLF line endings")


@dataclass
class Snapshot:
    """The routes in the order they are tried, and the signing secrets of their accounts."""

    routes: list[Route]
    secrets: dict[int, list[str]]
    loaded: float = field(default_factory=time.monotonic)


class RouteCache:
    """Routes read from the database at most every `ttl` seconds (one reader at a time)."""

    def __init__(self, store: Store, ttl: float) -> None:
        self.store = store
        self.ttl = ttl
        self._snapshot: Snapshot | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Snapshot:
        """The current routes; StoreUnavailable when they cannot be read."""
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - snapshot.loaded < self.ttl:
            return snapshot
        async with self._lock:
            snapshot = self._snapshot
            if snapshot is not None and time.monotonic() - snapshot.loaded < self.ttl:
                return snapshot
            routes = await self.store.list_routes()
            secrets = await self.store.active_signing_secrets({r.account_id for r in routes})
            self._snapshot = Snapshot(routes, secrets)
            return self._snapshot


def _clean_helo(helo: str | None) -> str:
    """The HELO name as printable ASCII (it travels in JSON and in request headers)."""
    return "".join(c if "!" <= c <= "~" else "?" for c in (helo or "")[:255])


class InboundHandler(SmtpHandler):
    """The session hooks and the delivery of one DATA: routes, POSTs, log, reply."""

    def __init__(self, ctx: ServerContext, client: HttpClient, claimants: list[Claimant]) -> None:
        cfg: InboundConfig = ctx.cfg.inbound
        # no AUTH here: the throttle is SmtpHandler's and stays unused
        super().__init__(ctx.pipeline, hostname=cfg.hostname or ctx.cfg.smtp.hostname,
                         max_message_bytes=cfg.max_message_bytes, throttle=AuthThrottle(1, 1),
                         data_timeout=cfg.data_timeout_seconds,
                         connection_limit=ConnectionLimit(cfg.max_connections_per_client))
        self.cfg = cfg
        self.store = ctx.store
        self.client = client
        self.claimants = claimants
        self.routes = RouteCache(ctx.store, cfg.route_cache_seconds)

    async def handle_MAIL(self, server: RelaySMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        """MAIL FROM: any sender (a bounce has the null one); the SIZE= check ran before."""
        envelope.mail_from = address  # "<>" for the null reverse-path (the session keeps it non-empty)
        envelope.mail_options.extend(mail_options)
        envelope.extra["targets"] = {}  # recipient -> Route or Claimant
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: RelaySMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        """RCPT TO: a claimant's address, or the first route that matches; anything else 550 5.1.1."""
        envelope.rcpt_attempts += 1
        targets: dict[str, Route | Claimant] = envelope.extra["targets"]
        if address.lower() in (r.lower() for r in envelope.rcpt_tos):
            return "250 2.1.5 OK (duplicate recipient ignored)"
        if len(envelope.rcpt_tos) >= self.cfg.max_recipients:
            RCPT_REFUSED.labels("too-many").inc()
            return "452 4.5.3 Too many recipients"
        target: Route | Claimant | None = next((c for c in self.claimants if c.claims(address)), None)
        if target is None:
            try:
                target = first_match((await self.routes.get()).routes, address)
            except StoreUnavailable:
                log.warning("inbound: routes unavailable, RCPT TO deferred", exc_info=True)
                RCPT_REFUSED.labels("temporary").inc()
                return TEMPORARY
        if target is None:
            RCPT_REFUSED.labels("no-route").inc()
            return f"550 5.1.1 <{address}>: no such recipient here"
        targets[address] = target
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    # DATA ------------------------------------------------------------------------------------

    async def receive(self, server: InboundSMTP, data: bytearray | None, bare: bool) -> str:
        """The reply to DATA for the message read (None: over the size limit)."""
        envelope, session = server.envelope, server.session
        targets: dict[str, Route | Claimant] = envelope.extra["targets"]
        groups: dict[object, tuple[Route | Claimant, list[str]]] = {}
        for recipient in envelope.rcpt_tos:
            target = targets[recipient]
            # a route by its id: the cache may hand out a fresh copy of it for each RCPT
            key = ("route", target.id) if isinstance(target, Route) else ("claimant", id(target))
            groups.setdefault(key, (target, []))[1].append(recipient)
        routed = [(t, tuple(r)) for t, r in groups.values() if isinstance(t, Route)]
        claimed = [(t, tuple(r)) for t, r in groups.values() if not isinstance(t, Route)]
        tls = server.tls_active
        sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from  # a bounce's null sender
        facts = payload.Envelope(sender, tuple(envelope.rcpt_tos), _clean_helo(session.host_name),
                                 server.peer_ip, tls)
        if data is None or bare:
            oversize_text = next((t.oversize_text for t, _ in routed if t.oversize_text), None)
            reply = replies.oversize(oversize_text) if data is None else BARE_LINE_END
            await self._record(facts, [
                (route, recipients, reply, "oversize" if data is None else "invalid")
                for route, recipients in routed], size=0)
            return reply
        size = len(data) - 2
        secrets: dict[int, list[str]] = {}
        started = time.monotonic()
        if routed:
            # before any claimant runs: a 451 here makes the sender retry, and a claimant that had
            # already taken the message would take it a second time
            try:
                secrets = (await self.routes.get()).secrets
                missing = {route.account_id for route, _ in routed} - secrets.keys()
                for account_id in missing:  # a route made since the snapshot, under a new account
                    secrets[account_id] = [(await self.store.ensure_signing_secret(account_id))[0]]
            except StoreUnavailable:
                log.warning("inbound: signing secrets unavailable, DATA deferred", exc_info=True)
                return TEMPORARY
        # the message as received: our Received: line (a fresh queue id and time on every attempt)
        # stays out of it, so a retried message keeps its webhook-id
        with memoryview(data) as view, view[2:] as message:  # released: data is resized just below
            digest = hashlib.sha256(message).digest()
        received = hygiene.format_received(
            helo=session.host_name, peer_ip=server.peer_ip, hostname=self.hostname,
            protocol="ESMTPS" if tls else "ESMTP", queue_id=uuid.uuid4().hex[:16], when=datetime.now(UTC))
        data[:2] = f"Received: {received}\r\n".encode("ascii")  # over the DATA line's CRLF, in place
        verdicts: list[replies.Verdict] = []
        for claimant, recipients in claimed:
            verdicts.append(await claimant.receive(bytes(data), _scoped(facts, recipients)))
        if routed:
            batch = deliver.prepare(data, facts, routed, digest)
            if not batch.uses_message:
                data.clear()  # JSON bodies only from here: the message itself is not held during the POSTs
            deliveries = await deliver.post_all(self.client, batch, secrets, timeout=self.cfg.post_timeout_seconds)
            del batch
            POST_SECONDS.observe(time.monotonic() - started)
            verdicts += [d.verdict for d in deliveries]
            await self._log_deliveries(facts, deliveries, size)
        return replies.worst(verdicts).reply

    async def _log_deliveries(self, facts: payload.Envelope, deliveries: list[deliver.Delivery], size: int) -> None:
        records = []
        for d in deliveries:
            MESSAGES.labels(d.verdict.outcome).inc()
            records.append(InboundRecord(
                account_id=d.route.account_id, route_id=d.route.id, url=d.route.url, recipients=d.recipients,
                sender=facts.mail_from, remote_ip=facts.remote_ip, size_bytes=size,
                http_status=d.verdict.http_status, response_text=d.verdict.response_text,
                smtp_reply=d.verdict.reply, outcome=d.verdict.outcome, duration_ms=round(d.duration * 1000),
                webhook_id=d.webhook_id))
        await self._write(records)

    async def _record(self, facts: payload.Envelope, refused: list[tuple[Route, tuple[str, ...], str, str]],
                      size: int) -> None:
        """Log rows for a message refused before any POST."""
        records = []
        for route, recipients, reply, outcome in refused:
            MESSAGES.labels(outcome).inc()
            records.append(InboundRecord(
                account_id=route.account_id, route_id=route.id, url=route.url, recipients=recipients,
                sender=facts.mail_from, remote_ip=facts.remote_ip, size_bytes=size, http_status=0,
                response_text="", smtp_reply=reply, outcome=outcome, duration_ms=0))
        await self._write(records)

    async def _write(self, records: list[InboundRecord]) -> None:
        try:
            await self.store.record_inbound(records)
        except StoreUnavailable:
            # the app has answered already: its answer stands, only the log row is lost
            log.warning("inbound: %d log row(s) not written", len(records), exc_info=True)


def _scoped(facts: payload.Envelope, recipients: tuple[str, ...]) -> payload.Envelope:
    return payload.Envelope(facts.mail_from, recipients, facts.helo, facts.remote_ip, facts.tls)


class InboundSMTP(RelaySMTP):
    """RelaySMTP (its DATA reader, error handling, shutdown) without AUTH, with the inbound DATA."""

    channel: InboundHandler

    def __init__(self, handler: InboundHandler, *, tls_context: ssl.SSLContext | None, idle_timeout: float,
                 max_commands: int) -> None:
        super().__init__(handler, auth_required=False, tls_context=tls_context, idle_timeout=idle_timeout,
                         max_commands=max_commands)

    async def smtp_AUTH(self, arg: str | None) -> None:
        """No AUTH on the inbound listener."""
        await self.push("502 5.5.1 AUTH is not available on this server")

    async def size_refusal(self, size: int) -> str | None:
        """An oversize SIZE= declaration is refused at once, 552 5.3.4 (RFC 1870)."""
        if size <= self.channel.max_message_bytes:
            return None
        MESSAGES.labels("oversize").inc()
        return "552 5.3.4 message size exceeds the fixed maximum message size"

    async def deliver(self, data: bytearray | None, bare: bool, dotted: bool) -> str:
        """POST the message to its routes; the reply is the worst verdict. The POSTs and their log rows
        run to the end even if the client hangs up meanwhile."""
        return await asyncio.shield(self.channel.receive(self, data, bare))


class InboundChannel(SmtpChannel):
    """The inbound listener; it drains and stops as the submission listeners do."""

    name = "inbound"

    def __init__(self, ctx: ServerContext) -> None:
        cfg: InboundConfig = ctx.cfg.inbound
        self.inbound = cfg
        self.client = HttpClient(ssrf.Policy(allow_private=cfg.allow_private_targets),
                                 limit_per_host=cfg.max_connections_per_app)
        self.inbound_handler = InboundHandler(ctx, self.client, claims.build(ctx))
        self.handler = self.inbound_handler  # what SmtpChannel.stop drains
        self._servers: list[asyncio.Server] = []
        self._endpoints: list[Endpoint] = []

    async def start(self) -> None:
        """Bind the listener (STARTTLS offered when inbound.tls_cert is set)."""
        cfg = self.inbound
        host, port = parse_listen("inbound.listen", cfg.listen)
        context = listener_context("inbound", cfg.tls_cert, cfg.tls_key) if cfg.tls_cert else None
        loop = asyncio.get_running_loop()

        def factory() -> InboundSMTP:
            return InboundSMTP(self.inbound_handler, tls_context=context, idle_timeout=cfg.idle_timeout_seconds,
                               max_commands=cfg.max_commands)

        try:
            server = await loop.create_server(factory, host, port, reuse_address=True, start_serving=True)
        except OSError as exc:
            raise ListenError(f"inbound.listen: cannot listen on {cfg.listen}: {exc.strerror or exc}") from None
        bound = server.sockets[0].getsockname()
        self._servers.append(server)
        self._endpoints.append(Endpoint("inbound", host, int(bound[1])))
        log.info("SMTP inbound listening on %s:%s", host, bound[1])

    async def stop(self, grace: float) -> None:
        """Drain as the submission listeners do, then close the pooled HTTP connections."""
        await super().stop(grace)
        await self.client.close()


def channels(ctx: ServerContext) -> list[InboundChannel]:
    """The registry's factory: the inbound listener runs when inbound.listen is set."""
    return [InboundChannel(ctx)] if ctx.cfg.inbound.listen else []
