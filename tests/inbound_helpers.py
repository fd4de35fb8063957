"""Helpers for the inbound listener's tests: a live relay with the listener on port 0 and routes."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from relay.inbound.log import InboundRecord
from relay.inbound.routes import Format, Route
from relay.store.store import Store
from tests.conftest import LiveRelay, relay_config, start_relay
from tests.peer import Peer


@dataclass
class Inbound:
    """A live relay with its inbound listener, and helpers to route and send to it."""

    live: LiveRelay

    @property
    def port(self) -> int:
        return self.live.server.port("inbound")

    @property
    def store(self) -> Store:
        return self.live.store

    async def account(self) -> int:
        return (await self.store.create_account(f"in-{uuid.uuid4().hex[:8]}")).id

    async def route(self, account_id: int, match: str, url: str, *, format: Format = Format.JSON,
                    priority: int = 0, oversize_text: str | None = None) -> tuple[Route, str]:
        """A route straight in the store (the creation checks are tested on their own); its secret."""
        route, secret, _made = await self.store.create_route(account_id, match, url, format=format,
                                                             priority=priority, oversize_text=oversize_text)
        return route, secret

    async def logs(self, count: int, timeout: float = 10) -> list[InboundRecord]:
        """Wait until at least count inbound log rows exist; the newest first."""
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.store.inbound_logs()
            if len(rows) >= count:
                return rows
            assert time.monotonic() < deadline, f"{len(rows)} inbound log rows, waited for {count}"
            await asyncio.sleep(0.02)

    async def smtplib_send(self, sender: str, recipients: list[str], data: bytes | str,
                           **options: Any) -> tuple[int, bytes, dict[str, tuple[int, bytes]]]:
        """Send with smtplib in a thread: (DATA code, DATA text, refused recipients)."""
        def run() -> tuple[int, bytes, dict[str, tuple[int, bytes]]]:
            client = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
            try:
                return transaction(client)
            finally:
                with contextlib.suppress(smtplib.SMTPException, OSError):  # a draining server says 421
                    client.quit()
                client.close()

        def transaction(client: smtplib.SMTP) -> tuple[int, bytes, dict[str, tuple[int, bytes]]]:
            client.ehlo("sender.test")
            code, text = client.mail(sender, options.get("mail_options", []))
            if code != 250:
                return code, text, {}
            refused = {}
            for rcpt in recipients:
                rcode, rtext = client.rcpt(rcpt)
                if rcode != 250:
                    refused[rcpt] = (rcode, rtext)
            if len(refused) == len(recipients):
                return 0, b"", refused
            body = data.encode() if isinstance(data, str) else data
            code, text = client.data(body)
            return code, text, refused

        return await asyncio.to_thread(run)


@contextlib.asynccontextmanager
async def serve_inbound(db_dsn: str, store: Store, peer: Peer, *, smtp: dict[str, Any] | None = None,
                        **inbound: Any) -> AsyncIterator[Inbound]:
    """A relay whose inbound listener is on 127.0.0.1:0 (private targets allowed unless told); smtp:
    settings of [smtp] (the key-check throttle lives there)."""
    settings: dict[str, Any] = {"listen": "127.0.0.1:0", "allow_private_targets": True, "post_timeout_seconds": 5.0,
                                "route_cache_seconds": 0.0}
    settings.update(inbound)
    live = await start_relay(relay_config(db_dsn, peer.url, inbound=settings, **({"smtp": smtp} if smtp else {})),
                             store, peer)
    try:
        yield Inbound(live)
    finally:
        await live.server.stop(grace=1)


def message(subject: str = "hello", body: str = "Hello app", sender: str = "alice@example.org",
            to: str = "support@inbound.test") -> str:
    """A small plain-text message with CRLF line ends."""
    return (f"From: Alice <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{uuid.uuid4().hex}@example.org>"
            f"\r\n\r\n{body}\r\n")
