"""The Webhooks tab: add an endpoint (secret shown once), see a delivery after a send, rotate, remove;
errors next to the field; another account's endpoint is not found."""

from __future__ import annotations

import re

import httpx

from relay.store.store import Store
from relay.webhooks import manage
from tests.conftest import eventually
from tests.dashboard_helpers import add_user, base_url, csrf_of, live_dashboard, login
from tests.peer import Peer
from tests.smtp_helpers import message, send


async def test_webhooks_tab(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer, webhooks={"allow_private_targets": True}) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        mine, theirs = await live.tenant(), await live.tenant()
        await add_user(store, mine, "ann@mine.test")
        await login(client, "ann@mine.test")
        page = await client.get("/webhooks")
        assert page.status_code == 200 and "No webhook endpoints" in page.text
        token = csrf_of(page.text)
        bad = await client.post("/webhooks", data={"csrf": token, "url": "ftp://x", "events": ""})
        assert bad.status_code == 400 and 'id="url-error"' in bad.text
        bad = await client.post("/webhooks", data={"csrf": token, "url": "http://127.0.0.1:9/h", "events": "nope"})
        assert bad.status_code == 400 and 'id="events-error"' in bad.text and "Unknown event type" in bad.text
        assert await store.endpoints(mine.account_id) == []
        made = await client.post("/webhooks", data={"csrf": token, "url": "http://127.0.0.1:9/h",
                                                    "events": "email.sent"})
        assert made.status_code == 200
        secret = re.search(r'id="new-secret" class="mono" readonly value="([^"]+)"', made.text)
        assert secret and secret.group(1).startswith("whsec_")
        (endpoint,) = await store.endpoints(mine.account_id)
        assert endpoint["event_types"] == ["email.sent"]
        # a send makes a delivery, listed on the endpoint's page
        assert (await send(live.port, mine.key, mine.sender, ["x@dest.test"], message(mine.sender))).code == 250

        async def listed() -> bool:
            shown = await client.get(f"/webhooks/{endpoint['id']}")
            return shown.status_code == 200 and "email.sent" in shown.text
        await eventually(listed, what="the delivery is listed")
        rotated = await client.post(f"/webhooks/{endpoint['id']}/rotate", data={"csrf": token})
        again = re.search(r'id="new-secret" class="mono" readonly value="([^"]+)"', rotated.text)
        assert rotated.status_code == 200 and again and again.group(1) != secret.group(1)
        # another account's endpoint: not found
        other, _ = await manage.add(store, live.cfg.webhooks, theirs.account_id, "http://127.0.0.1:9/o", None)
        assert (await client.get(f"/webhooks/{other['id']}")).status_code == 404
        assert (await client.post(f"/webhooks/{other['id']}/remove", data={"csrf": token})).status_code == 404
        assert (await client.post(f"/webhooks/{endpoint['id']}/remove", data={})).status_code == 403  # no CSRF
        removed = await client.post(f"/webhooks/{endpoint['id']}/remove", data={"csrf": token})
        assert removed.status_code == 303 and await store.endpoints(mine.account_id) == []
        assert len(await store.endpoints(theirs.account_id)) == 1
