"""The Suppressions tab: list, add (errors next to the field), remove; only the account's own list."""

from __future__ import annotations

import httpx

from relay.store.store import Store
from tests.dashboard_helpers import add_user, base_url, csrf_of, live_dashboard, login
from tests.peer import Peer


async def test_suppressions_tab(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        mine, theirs = await live.tenant(), await live.tenant()
        await add_user(store, mine, "ann@mine.test")
        await store.add_suppression(theirs.account_id, "theirs@x.test", "manual")
        await login(client, "ann@mine.test")
        page = await client.get("/suppressions")
        assert page.status_code == 200 and "No suppressed addresses" in page.text and "theirs@x.test" not in page.text
        token = csrf_of(page.text)
        bad = await client.post("/suppressions", data={"csrf": token, "address": "not an address"})
        assert bad.status_code == 400 and 'id="address-error"' in bad.text
        assert (await client.post("/suppressions", data={"address": "a@x.test"})).status_code == 403  # no CSRF
        added = await client.post("/suppressions", data={"csrf": token, "address": "Gone@X.test"})
        assert added.status_code == 303
        assert [e["address"] for e in await store.suppressions(mine.account_id)] == ["gone@x.test"]
        assert "gone@x.test" in (await client.get("/suppressions")).text
        # another account's entry cannot be removed from here
        assert (await client.post("/suppressions/remove", data={"csrf": token, "address": "theirs@x.test"})
                ).status_code == 404
        assert len(await store.suppressions(theirs.account_id)) == 1
        removed = await client.post("/suppressions/remove", data={"csrf": token, "address": "gone@x.test"})
        assert removed.status_code == 303 and await store.suppressions(mine.account_id) == []
