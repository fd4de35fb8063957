"""The Domains tab: an operator adds a sending domain, its records are shown, a DNS check reports; a
plain user only sees their own account's domains."""

from __future__ import annotations

import socket

import httpx

from relay.store.store import Store
from tests.dashboard_helpers import add_user, base_url, csrf_of, live_dashboard, login
from tests.peer import Peer


def _closed_udp_port() -> int:
    """A loopback UDP port nobody answers on (bound, read, closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_domains_tab(db_dsn: str, store: Store, peer: Peer) -> None:
    dns = {"nameservers": (f"127.0.0.1:{_closed_udp_port()}",), "timeout_seconds": 0.5}
    async with live_dashboard(db_dsn, store, peer, dns=dns) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as operator, \
            httpx.AsyncClient(base_url=base_url(live)) as user:
        home, other = await live.tenant(), await live.tenant()
        await add_user(store, home, "op@home.test", operator=True)
        await add_user(store, other, "user@other.test")
        await login(operator, "op@home.test")
        page = await operator.get("/domains")
        assert page.status_code == 200 and "No sending domains yet" in page.text
        token = csrf_of(page.text)
        bad = await operator.post("/domains", data={"csrf": token, "domain": "not a domain"})
        assert bad.status_code == 400 and 'id="domain-error"' in bad.text
        added = await operator.post("/domains", data={"csrf": token, "domain": "News.Home.test"})
        assert added.status_code == 303 and added.headers["location"] == "/domains/news.home.test"
        shown = await operator.get("/domains/news.home.test")
        assert shown.status_code == 200
        assert "._domainkey.news.home.test" in shown.text and "v=DKIM1" in shown.text and "pending" in shown.text
        domain = await store.find_domain("news.home.test")
        assert domain.account_id == home.account_id
        again = await operator.post("/domains", data={"csrf": token, "domain": "news.home.test"})
        assert again.status_code == 400 and "already a sending domain" in again.text
        # the DNS check, with nameservers that never answer: said in words, nothing recorded
        checked = await operator.post("/domains/news.home.test/verify", data={"csrf": token})
        assert checked.status_code == 503 and "The DNS check could not be made" in checked.text
        assert all(k.checked_at is None for k in (await store.find_domain("news.home.test")).keys)
        assert (await operator.post("/domains/news.home.test/verify", data={})).status_code == 403  # no CSRF

        # a user of another account: not found, and cannot add
        await login(user, "user@other.test")
        assert (await user.get("/domains/news.home.test")).status_code == 404
        mine = await user.get("/domains")
        assert "news.home.test" not in mine.text and "Ask your operator" in mine.text
        refused = await user.post("/domains", data={"csrf": csrf_of(mine.text), "domain": "other.test"})
        assert refused.status_code == 403
        assert (await user.post("/domains/news.home.test/verify", data={"csrf": csrf_of(mine.text)})
                ).status_code == 404
