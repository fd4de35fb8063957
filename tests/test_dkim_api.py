"""/v1/domains against a live relay: what each operation does, and every documented response made real."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from relay.dkim import records
from tests.conftest import LiveRelay, Tenant, database_unreachable, relay_config, start_relay
from tests.dns_server import ZoneServer, zone_server
from tests.test_openapi import Conformance, _auth, _client


@pytest.fixture
async def dns() -> AsyncIterator[ZoneServer]:
    with zone_server() as server:
        yield server


@pytest.fixture
async def live(db_dsn: str, store, peer, dns: ZoneServer) -> AsyncIterator[LiveRelay]:
    cfg = relay_config(db_dsn, peer.url, dns={"nameservers": (dns.nameserver,), "timeout_seconds": 2.0},
                       dkim={"spf_include": "_spf.upstream.test"},
                       # the conformance test makes a few dozen wrong-key calls on purpose before it
                       # trips the shared AUTH throttle (429) at the end
                       smtp={"auth_failures_before_delay": 59, "auth_failures_before_refusal": 60})
    relay = await start_relay(cfg, store, peer)
    try:
        yield relay
    finally:
        await relay.server.stop(grace=1)


@pytest.fixture
async def http(live: LiveRelay) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(live) as client:
        yield client


def zone(doc: dict) -> str:
    """The records the API returned, as zone-file lines (what an operator pastes)."""
    return "\n".join(records.Record(r["purpose"], r["name"], r["type"], r["value"]).zone_line()
                     for r in doc["records"])


async def test_add_publish_verify_send_remove(live: LiveRelay, http: httpx.AsyncClient, dns: ZoneServer) -> None:
    c = Conformance()
    t = await live.tenant()
    added = c.check(await http.post("/v1/domains", json={"domain": "Example.COM", "ed25519": True},
                                    headers=_auth(t)), "/v1/domains")
    assert added.status_code == 201, added.text
    doc = added.json()
    assert doc["domain"] == "example.com" and doc["status"] == "pending" and not doc["signing"]
    assert [k["algorithm"] for k in doc["keys"]] == ["rsa-sha256", "ed25519-sha256"]
    assert "private" not in added.text.lower().replace("never the private key", "")
    purposes = [r["purpose"] for r in doc["records"]]
    assert purposes == ["dkim", "dkim", "spf", "dmarc"]

    path = "/v1/domains/{domain}/verify"
    dns.publish("")
    unverified = c.check(await http.post("/v1/domains/example.com/verify", headers=_auth(t)), path)
    assert unverified.status_code == 200 and unverified.json()["status"] == "pending"
    assert [f["ok"] for f in unverified.json()["findings"]] == [False, False, False, False]

    dns.publish(zone(doc))
    verified = c.check(await http.post("/v1/domains/example.com/verify", headers=_auth(t)), path)
    assert verified.json()["status"] == "verified" and verified.json()["signing"], verified.text
    assert all(f["ok"] for f in verified.json()["findings"])

    sent = await http.post("/v1/send", json={"from": t.sender, "to": "r@dest.test", "subject": "s", "text": "x"},
                           headers=_auth(t))
    assert sent.status_code == 200
    assert live.peer.messages[-1].data.startswith(b"DKIM-Signature:")

    listed = c.check(await http.get("/v1/domains", headers=_auth(t)), "/v1/domains")
    assert [d["domain"] for d in listed.json()["domains"]] == ["example.com"]
    shown = c.check(await http.get("/v1/domains/example.com", headers=_auth(t)), "/v1/domains/{domain}")
    assert shown.json()["records"] == doc["records"]
    removed = c.check(await http.delete("/v1/domains/example.com", headers=_auth(t)), "/v1/domains/{domain}")
    assert removed.json() == {"ok": True, "domain": "example.com", "removed": True}
    await http.post("/v1/send", json={"from": t.sender, "to": "r@dest.test", "subject": "s", "text": "x"},
                    headers=_auth(t))
    assert not live.peer.messages[-1].data.startswith(b"DKIM-Signature:")


async def test_every_documented_domain_response_is_real(live: LiveRelay, http: httpx.AsyncClient, pg) -> None:
    c = Conformance()
    t = await live.tenant()
    stranger = await live.tenant(sender="x@mail.example.com")  # may send from example.com, does not own it
    disabled = await live.tenant(sender="y@other.test")
    await live.store.set_key_enabled(disabled.key_id, False)
    operations = [("get", "/v1/domains", "/v1/domains"), ("post", "/v1/domains", "/v1/domains"),
                  ("get", "/v1/domains/{domain}", "/v1/domains/example.com"),
                  ("delete", "/v1/domains/{domain}", "/v1/domains/example.com"),
                  ("post", "/v1/domains/{domain}/verify", "/v1/domains/example.com/verify")]

    async def call(method: str, documented: str, url: str, who: Tenant | str | None, body: object = None
                   ) -> httpx.Response:
        kwargs = {"json": body} if method == "post" and documented == "/v1/domains" else {}
        return c.check(await http.request(method.upper(), url, headers=_auth(who), **kwargs), documented)

    add = {"domain": "example.com"}
    assert (await call("post", "/v1/domains", "/v1/domains", t, add)).status_code == 201
    assert (await call("post", "/v1/domains", "/v1/domains", stranger, add)).status_code == 409
    for bad in ({"domain": "not a domain"}, {"domain": "example.com", "selector": "bad selector"},
                {"domain": "example.com", "ed25519": "yes"}, ["example.com"],
                {"domain": "example.org"}):  # not a domain any of t's senders is in
        assert (await call("post", "/v1/domains", "/v1/domains", t, bad)).status_code == 400
    assert (await call("post", "/v1/domains", "/v1/domains", t, {"domain": "x" * 5000})).status_code == 413
    for method, documented, url in operations:
        body = {"domain": "example.net"}
        for who, status in ((None, 401), ("rk_000000000000_nope", 401), (disabled, 403)):
            assert (await call(method, documented, url, who, body)).status_code == status
        if "{domain}" in documented:
            assert (await call(method, documented, url, stranger)).status_code == 404
            assert (await call(method, documented, url.replace("example.com", "nope.test"), t)).status_code == 404
    assert (await call("get", "/v1/domains", "/v1/domains", t)).status_code == 200
    assert (await call("get", "/v1/domains/{domain}", "/v1/domains/example.com", t)).status_code == 200
    assert (await call("post", "/v1/domains/{domain}/verify", "/v1/domains/example.com/verify", t)).status_code == 200
    async with database_unreachable(live, pg.admin_dsn):
        for method, documented, url in operations:
            assert (await call(method, documented, url, t, {"domain": "example.com"})).status_code == 503
    assert (await call("delete", "/v1/domains/{domain}", "/v1/domains/example.com", t)).status_code == 200
    for _ in range(60):  # wrong keys until the address is refused: then every route says 429
        if (await call("get", "/v1/domains", "/v1/domains", "rk_000000000000_nope")).status_code == 429:
            break
    for method, documented, url in operations:
        assert (await call(method, documented, url, t, {"domain": "example.com"})).status_code == 429
    for method, documented, _ in operations:
        c.assert_all_produced(documented, method)


async def test_a_taken_domain_is_409_before_any_key_is_generated(
        live: LiveRelay, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from relay.dkim import keys

    real, generated = keys.generate, []

    def counting(algorithm: str) -> keys.PrivateKey:  # the real generator, counted
        generated.append(algorithm)
        return real(algorithm)  # type: ignore[arg-type]

    monkeypatch.setattr(keys, "generate", counting)
    owner = await live.tenant()
    other = await live.tenant(sender="x@mail.example.com")  # may send from example.com
    assert (await http.post("/v1/domains", json={"domain": "example.com"}, headers=_auth(owner))).status_code == 201
    assert generated == ["rsa-sha256"]
    taken = await http.post("/v1/domains", json={"domain": "EXAMPLE.com", "ed25519": True}, headers=_auth(other))
    assert taken.status_code == 409 and "already a sending domain" in taken.text
    assert generated == ["rsa-sha256"]
    assert [d.account_id for d in await live.store.list_domains()] == [owner.account_id]


async def test_verify_when_dns_does_not_answer_is_503(db_dsn: str, store, peer) -> None:
    import socket
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    cfg = relay_config(db_dsn, peer.url, dns={"nameservers": (f"127.0.0.1:{silent.getsockname()[1]}",),
                                             "timeout_seconds": 0.5})
    live = await start_relay(cfg, store, peer)
    try:
        t = await live.tenant()
        async with _client(live) as http:
            assert (await http.post("/v1/domains", json={"domain": "example.com"}, headers=_auth(t))).status_code == 201
            response = await http.post("/v1/domains/example.com/verify", headers=_auth(t))
            assert response.status_code == 503 and response.json()["code"] == "TEMPORARY"
            assert response.headers["retry-after"] == "5"
        keys = (await store.find_domain("example.com")).keys
        assert all(k.checked_at is None for k in keys)  # nothing recorded from a check that did not happen
    finally:
        await live.server.stop(grace=1)
        silent.close()
