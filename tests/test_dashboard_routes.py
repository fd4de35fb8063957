"""The Inbound routes tab: the account's routes and recent inbound deliveries; remove; isolation."""

from __future__ import annotations

import httpx

from relay.inbound.log import InboundRecord
from relay.store.store import Store
from tests.dashboard_helpers import add_user, base_url, csrf_of, live_dashboard, login
from tests.peer import Peer


async def test_routes_tab(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        mine, theirs = await live.tenant(), await live.tenant()
        await add_user(store, mine, "ann@mine.test")
        await login(client, "ann@mine.test")
        page = await client.get("/routes")
        assert page.status_code == 200 and "No inbound routes" in page.text and "No inbound mail yet" in page.text
        route, _, _ = await store.create_route(mine.account_id, "*@in.mine.test", "http://127.0.0.1:9/in")
        other, _, _ = await store.create_route(theirs.account_id, "*@in.theirs.test", "http://127.0.0.1:9/o")
        await store.record_inbound([InboundRecord(
            mine.account_id, route.id, route.url, ("hello@in.mine.test",), "someone@far.test", "192.0.2.7", 1234,
            200, "ok", "250 2.0.0 delivered", "delivered", 42)])
        page = await client.get("/routes")
        assert route.id in page.text and "*@in.mine.test" in page.text and other.id not in page.text
        assert "hello@in.mine.test" in page.text and "250 2.0.0 delivered" in page.text and "42 ms" in page.text
        token = csrf_of(page.text)
        assert (await client.post(f"/routes/{other.id}/remove", data={"csrf": token})).status_code == 404
        assert (await client.post(f"/routes/{route.id}/remove", data={})).status_code == 403  # no CSRF
        assert (await client.post(f"/routes/{route.id}/remove", data={"csrf": token})).status_code == 303
        assert await store.list_routes(mine.account_id) == [] and len(await store.list_routes(theirs.account_id)) == 1
