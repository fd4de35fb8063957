"""The signing keys as the send path sees them: loaded once, reloaded after the TTL, kept through a database blip;
and the periodic re-check that verifies a domain once its record appears in DNS."""

from __future__ import annotations

import asyncio
import time

from relay.dkim import records, service
from relay.dkim.keys import Vault
from relay.dkim.outbound import KeyRing
from tests.conftest import KEY_SECRET, LiveRelay, database_unreachable, eventually, relay_config
from tests.dns_server import zone_server


async def test_ring_reloads_after_its_ttl_and_keeps_keys_through_a_blip(relay: LiveRelay, pg) -> None:
    tenant = await relay.tenant()
    ring = KeyRing(relay.store, Vault(KEY_SECRET), ttl=0.2)
    assert await ring.keys_for("example.com") == []
    await service.add(relay.store, relay.cfg, KEY_SECRET, tenant.account_id, "example.com", trust=True)
    assert await ring.keys_for("example.com") == []  # still the loaded view, until the TTL passes

    async def signs() -> bool:
        return [k.selector for k in await ring.keys_for("example.com")] != []
    await eventually(signs)
    assert [k.domain for k in await ring.keys_for("a.b.example.com")] == ["example.com"]  # nearest parent
    assert await ring.keys_for("example.org") == []

    async with database_unreachable(relay, pg.admin_dsn):
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # several TTLs pass with reloads failing
            assert len(await ring.keys_for("example.com")) == 1
            await asyncio.sleep(0.05)

    await relay.store.remove_domain("example.com")
    ring.invalidate()
    assert await ring.keys_for("example.com") == []  # after invalidate, the next use waits for the reload


async def test_recheck_verifies_a_domain_once_its_record_is_published(db_dsn: str, store, peer) -> None:
    with zone_server() as dns:
        cfg = relay_config(db_dsn, peer.url, dns={"nameservers": (dns.nameserver,), "timeout_seconds": 2.0})
        account = await store.create_account("acme")
        domain = await service.add(store, cfg, KEY_SECRET, account.id, "example.com", ed25519=True)
        other = await service.add(store, cfg, KEY_SECRET, account.id, "example.org")
        dns.publish("")
        assert await service.recheck_pending(store, cfg) == 0
        assert (await store.find_domain("example.com")).keys[0].checked_at is not None
        dns.publish(records.zone_text(service.records_for(cfg, domain)))
        assert await service.recheck_pending(store, cfg) == 2  # both selectors of example.com
        assert (await store.find_domain("example.com")).signing
        assert not (await store.find_domain("example.org")).signing
        assert other.domain == "example.org"
        assert await service.recheck_pending(store, cfg) == 0  # verified domains are left alone
