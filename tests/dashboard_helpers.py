"""Helpers for dashboard tests: a live relay with its dashboard on port 0, users, a logged-in client."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from relay.dashboard import passwords
from relay.store.store import Store
from tests.conftest import LiveRelay, Tenant, relay_config, start_relay
from tests.peer import Peer

PASSWORD = "correct horse battery"
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = CSRF_FIELD.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def add_user(store: Store, tenant: Tenant, email: str, *, operator: bool = False,
                   password: str = PASSWORD) -> str:
    """A dashboard user of the tenant's account; returns the email."""
    await store.add_user(tenant.account_id, email, passwords.hash_password(password), operator)
    return email


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    """Log in through the form (GET for the CSRF token and cookie, then POST)."""
    page = await client.get("/login")
    return await client.post("/login", data={"csrf": csrf_of(page.text), "email": email, "password": password,
                                             "next": "/logs"})


@contextlib.asynccontextmanager
async def live_dashboard(db_dsn: str, store: Store, peer: Peer, *, dns: dict[str, Any] | None = None,
                         webhooks: dict[str, Any] | None = None, **dashboard: Any) -> AsyncIterator[LiveRelay]:
    """A relay (SMTP, API, dashboard) on port 0, relaying to peer; dashboard: [dashboard] keys."""
    sections: dict[str, dict[str, object]] = {"dashboard": {"listen": "127.0.0.1:0"} | dashboard}
    if dns is not None:
        sections["dns"] = dns
    if webhooks is not None:
        sections["webhooks"] = webhooks
    cfg = relay_config(db_dsn, peer.url, **sections)
    live = await start_relay(cfg, store, peer)
    try:
        yield live
    finally:
        await live.server.stop(grace=1)


def base_url(live: LiveRelay, scheme: str = "http") -> str:
    """The dashboard's address."""
    return f"{scheme}://127.0.0.1:{live.server.port('dashboard')}"


async def insert_messages(store: Store, account_id: int, count: int, *, status: str = "sent",
                          channel: str = "smtp", sender: str = "app@example.com", days_back: int = 0) -> None:
    """Log rows written straight into the table (generate_series), one a minute back from now."""
    await store.pool.execute(
        "INSERT INTO messages (id, channel, status, key_id, account_id, sender, recipient_count, size_bytes, "
        "credits_charged, credits_refunded, failure_code, upstream_reply, created_at) "
        "SELECT gen_random_uuid(), $2, $3, 'k', $1, $4, 1, 100, 1, CASE WHEN $3 = 'failed' THEN 1 ELSE 0 END, "
        "CASE WHEN $3 = 'failed' THEN 550 END, CASE WHEN $3 = 'failed' THEN '550 5.1.1 no such user' "
        "ELSE '250 2.0.0 ok' END, now() - make_interval(days => $5) - make_interval(mins => g) "
        "FROM generate_series(1, $6) AS g", account_id, channel, status, sender, days_back, count)


def new_id() -> str:
    """A message id that exists nowhere."""
    return str(uuid.uuid4())
