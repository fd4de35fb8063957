"""The dashboard's HTTP rules with a plain client: cookie flags, CSRF, throttling, isolation, sessions."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
import trustme
from passlib.hash import argon2

from relay.dashboard import passwords
from relay.store.store import Store
from tests.conftest import LiveRelay
from tests.dashboard_helpers import (
    PASSWORD,
    add_user,
    base_url,
    csrf_of,
    insert_messages,
    live_dashboard,
    login,
    new_id,
)
from tests.peer import Peer


async def _two_tenants(live: LiveRelay) -> tuple[str, str, int, int]:
    a, b = await live.tenant(), await live.tenant()
    await add_user(live.store, a, "alice@a.test")
    await add_user(live.store, b, "bob@b.test")
    return "alice@a.test", "bob@b.test", a.account_id, b.account_id


def _cookie_header(response: httpx.Response, name: str) -> str:
    found = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert found, f"no {name} cookie set"
    return found[0]


async def test_session_cookie_flags_over_http(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        alice, *_ = await _two_tenants(live)
        response = await login(client, alice)
        assert response.status_code == 303 and response.headers["location"] == "/logs"
        cookie = _cookie_header(response, "relay_session").lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "max-age=43200" in cookie
        assert "secure" not in cookie  # plain HTTP: a Secure cookie would never come back
        page = await client.get("/logs")
        assert page.status_code == 200
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"


async def test_session_cookie_secure_over_https(db_dsn: str, store: Store, peer: Peer, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    async with live_dashboard(db_dsn, store, peer, tls_cert=str(cert_path), tls_key=str(key_path)) as live, \
            httpx.AsyncClient(base_url=base_url(live, "https"), verify=trust) as client:
        alice, *_ = await _two_tenants(live)
        response = await login(client, alice)
        assert response.status_code == 303
        cookie = _cookie_header(response, "relay_session").lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie
        assert "secure" in _cookie_header(await client.get("/login"), "relay_login_csrf").lower()


async def test_secure_cookies_behind_a_tls_proxy(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer, secure_cookies=True) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        alice, *_ = await _two_tenants(live)
        form = await client.get("/login")
        assert "secure" in _cookie_header(form, "relay_login_csrf").lower()
        token = csrf_of(form.text)  # a Secure cookie does not come back over http: the proxy's side is https
        response = await client.post("/login", data={"csrf": token, "email": alice, "password": PASSWORD},
                                     headers={"Cookie": f"relay_login_csrf={token}"})
        assert response.status_code == 303
        assert "secure" in _cookie_header(response, "relay_session").lower()


async def test_csrf_is_required_on_every_post(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        alice, _, account_a, _ = await _two_tenants(live)
        # the login form itself: no token, or a token that is not the cookie's
        assert (await client.post("/login", data={"email": alice, "password": PASSWORD})).status_code == 403
        await client.get("/login")
        assert (await client.post("/login", data={"csrf": "forged", "email": alice,
                                                  "password": PASSWORD})).status_code == 403
        assert (await login(client, alice)).status_code == 303
        before = await store.list_keys(account_a)
        for data in ({"name": "x"}, {"name": "x", "csrf": ""}, {"name": "x", "csrf": "not-the-token"}):
            refused = await client.post("/keys", data=data)
            assert refused.status_code == 403 and "CSRF" in refused.text
        assert await store.list_keys(account_a) == before  # nothing was created
        key_id = before[0].id
        assert (await client.post(f"/keys/{key_id}/disable", data={})).status_code == 403
        assert (await store.get_key(key_id)).enabled
        assert (await client.post("/logout", data={})).status_code == 403
        # with the page's token it goes through
        token = csrf_of((await client.get("/keys")).text)
        assert (await client.post(f"/keys/{key_id}/disable", data={"csrf": token})).status_code == 303
        assert not (await store.get_key(key_id)).enabled


async def test_post_without_session_is_refused(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        tenant = await live.tenant()
        assert (await client.post(f"/keys/{tenant.key_id}/disable", data={"csrf": "x"})).status_code == 403
        assert (await store.get_key(tenant.key_id)).enabled
        redirect = await client.get("/keys")
        assert redirect.status_code == 303 and redirect.headers["location"] == "/login?next=%2Fkeys"


async def test_failed_logins_throttled_per_user(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer, login_failures_per_user=3) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        alice, bob, *_ = await _two_tenants(live)
        for _ in range(3):
            wrong = await login(client, alice, "wrong password!")
            assert wrong.status_code == 401 and "Wrong email or password." in wrong.text
        throttled = await login(client, alice)  # even the right password, until the window passes
        assert throttled.status_code == 429 and "Too many failed logins" in throttled.text
        assert int(throttled.headers["retry-after"]) == 900
        assert "relay_session" not in throttled.headers.get("set-cookie", "")
        assert (await login(client, bob)).status_code == 303  # another user from the same address is fine
        # the window passing (made to pass in the table) lets alice in again
        await store.pool.execute("UPDATE login_failures SET window_start = now() - interval '1 hour'")
        assert (await login(client, alice)).status_code == 303


async def test_failed_logins_throttled_per_address(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer, login_failures_per_address=4) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        alice, *_ = await _two_tenants(live)
        for i in range(4):  # a different (unknown) user each time: only the address adds up
            assert (await login(client, f"nobody{i}@a.test")).status_code == 401
        assert (await login(client, alice)).status_code == 429


async def test_parallel_failed_logins_are_throttled_as_serial_ones(db_dsn: str, store: Store, peer: Peer) -> None:
    # each guess is counted before its password check: twelve at once cannot all pass a count read first
    async with live_dashboard(db_dsn, store, peer, login_failures_per_user=3) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        alice, *_ = await _two_tenants(live)
        csrf = csrf_of((await client.get("/login")).text)  # one form: the cookie jar holds its token

        async def guess() -> int:
            data = {"csrf": csrf, "email": alice, "password": "wrong password!", "next": "/logs"}
            return (await client.post("/login", data=data)).status_code

        statuses = await asyncio.gather(*(guess() for _ in range(12)))
        assert set(statuses) <= {401, 429} and statuses.count(401) == 3, statuses
        assert (await login(client, alice)).status_code == 429  # even the right password, within the window
        await store.pool.execute("UPDATE login_failures SET window_start = now() - interval '1 hour'")
        assert (await login(client, alice)).status_code == 303


async def test_successful_logins_do_not_count_against_the_address(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer, login_failures_per_address=2) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        alice, bob, *_ = await _two_tenants(live)
        for email in (alice, bob, alice, bob):  # an attempt is counted first, then taken back when it succeeds
            assert (await login(client, email)).status_code == 303


async def test_a_user_sees_only_their_account(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        alice, _, account_a, account_b = await _two_tenants(live)
        await insert_messages(store, account_a, 2, sender="mine@a.test")
        await insert_messages(store, account_b, 2, sender="theirs@b.test")
        theirs = await store.pool.fetchval("SELECT id FROM messages WHERE account_id = $1 LIMIT 1", account_b)
        their_key = (await store.list_keys(account_b))[0].id
        await login(client, alice)
        logs = await client.get("/logs")
        assert "mine@a.test" in logs.text and "theirs@b.test" not in logs.text
        assert (await client.get(f"/logs/{theirs}")).status_code == 404
        assert (await client.get(f"/logs/{new_id()}")).status_code == 404
        assert (await client.get("/logs/not-a-uuid")).status_code == 404
        pasted = await client.get("/logs", params={"q": str(theirs)})  # pasting it redirects ... to a 404
        assert pasted.status_code == 303
        assert (await client.get(pasted.headers["location"])).status_code == 404
        token = csrf_of(logs.text)
        for action in ("disable", "rotate", "enable"):
            assert (await client.post(f"/keys/{their_key}/{action}", data={"csrf": token})).status_code == 404
        assert (await store.get_key(their_key)).enabled
        # a plain user cannot switch accounts
        assert (await client.post("/switch", data={"csrf": token, "account_id": str(account_b)})).status_code == 403


async def test_operator_sees_every_account_and_switches(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        a, b = await live.tenant(), await live.tenant()
        await add_user(store, a, "op@a.test", operator=True)
        await insert_messages(store, b.account_id, 1, sender="theirs@b.test")
        await login(client, "op@a.test")
        page = await client.get("/logs")
        assert "theirs@b.test" not in page.text and 'id="switch-account"' in page.text
        switched = await client.post("/switch", data={"csrf": csrf_of(page.text), "account_id": str(b.account_id),
                                                      "next": "/logs"})
        assert switched.status_code == 303
        assert "theirs@b.test" in (await client.get("/logs")).text
        assert (await client.post("/switch", data={"csrf": csrf_of(page.text), "account_id": "999999"})
                ).status_code == 404


async def test_logout_and_expiry_end_the_session(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        alice, *_ = await _two_tenants(live)
        await login(client, alice)
        cookie = client.cookies["relay_session"]
        page = await client.get("/overview")
        assert page.status_code == 200
        out = await client.post("/logout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303
        replay = httpx.AsyncClient(base_url=base_url(live), cookies={"relay_session": cookie})
        async with replay:
            assert (await replay.get("/overview")).status_code == 303  # the old cookie is dead server-side
        await login(client, alice)
        assert (await client.get("/overview")).status_code == 200
        await store.pool.execute("UPDATE dashboard_sessions SET expires_at = now() - interval '1 second'")
        assert (await client.get("/overview")).status_code == 303


async def test_password_rehashed_at_login_when_parameters_change(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        tenant = await live.tenant()
        weak = argon2.using(rounds=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
        await store.add_user(tenant.account_id, "old@a.test", weak, False)
        assert passwords.needs_rehash(weak)
        assert (await login(client, "old@a.test")).status_code == 303
        user = await store.find_user("old@a.test")
        assert user is not None and user.password_hash != weak
        assert not passwords.needs_rehash(user.password_hash)
        assert passwords.verify_password(PASSWORD, user.password_hash)
        assert (await client.get("/overview")).status_code == 200  # the rehash did not end this session


async def test_form_errors_are_next_to_the_field(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        alice, _, account_a, _ = await _two_tenants(live)
        await login(client, alice)
        token = csrf_of((await client.get("/keys")).text)
        bad = await client.post("/keys", data={"csrf": token, "name": "k", "rate": "-3"})
        assert bad.status_code == 400
        assert 'id="key-rate-error"' in bad.text and 'aria-describedby="key-rate-error"' in bad.text
        assert len(await store.list_keys(account_a)) == 1
        bad = await client.get("/logs", params={"since": "yesterday"})
        assert bad.status_code == 400 and 'id="since-error"' in bad.text
        # an account user may not authorize senders
        refused = await client.post("/senders", data={"csrf": token, "pattern": "evil.test"})
        assert refused.status_code == 403
        assert [s.pattern for s in await store.list_senders(account_a)] == ["app@example.com"]


async def test_logs_keyset_pages_and_filters(db_dsn: str, store: Store, peer: Peer) -> None:
    async with live_dashboard(db_dsn, store, peer) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        alice, _, account_a, _ = await _two_tenants(live)
        await insert_messages(store, account_a, 70, status="sent")
        await insert_messages(store, account_a, 40, status="failed", channel="api", sender="other@a.test",
                              days_back=3)
        await login(client, alice)
        seen: list[str] = []
        url: str | None = "/logs"
        while url:
            page = await client.get(url)
            assert page.status_code == 200
            seen += _message_ids(page.text)
            url = _older_link(page.text)
        assert len(seen) == 110 and len(set(seen)) == 110
        failed = await client.get("/logs", params={"status": "failed"})
        assert len(_message_ids(failed.text)) == 40 and "other@a.test" in failed.text
        assert len(_message_ids((await client.get("/logs", params={"channel": "smtp"})).text)) == 50  # a full page
        assert len(_message_ids((await client.get("/logs", params={"q": "other@a.test"})).text)) == 40
        assert len(_message_ids((await client.get("/logs", params={"q": " other@A.TEST "})).text)) == 40
        assert _message_ids((await client.get("/logs", params={"q": "OTHER@a.test"})).text) == []  # local part kept
        today = (await store.pool.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")).isoformat()
        recent = await client.get("/logs", params={"since": today, "status": "sent"})
        assert len(_message_ids(recent.text)) > 0
        empty = await client.get("/logs", params={"channel": "inbound"})
        assert _message_ids(empty.text) == [] and "No messages match these filters" in empty.text


def _message_ids(html: str) -> list[str]:
    import re
    return re.findall(r'<a href="/logs/([0-9a-f-]{36})" class="mono">', html)


def _older_link(html: str) -> str | None:
    import html as html_lib
    import re
    found = re.search(r'<a href="([^"]+)" rel="next">', html)
    return html_lib.unescape(found.group(1)) if found else None


async def test_busy_port_is_a_listen_error_naming_the_key(db_dsn: str, store: Store, peer: Peer) -> None:
    import socket

    import pytest

    from relay.errors import ListenError
    from tests.conftest import relay_config, start_relay

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        cfg = relay_config(db_dsn, peer.url, dashboard={"listen": f"127.0.0.1:{port}"})
        with pytest.raises(ListenError, match=f"dashboard.listen: cannot listen on 127.0.0.1:{port}"):
            await start_relay(cfg, store, peer)
    finally:
        taken.close()


async def test_overview_counts_today_and_lists_the_debit(db_dsn: str, store: Store, peer: Peer) -> None:
    from tests.smtp_helpers import message, send

    async with live_dashboard(db_dsn, store, peer) as live, \
            httpx.AsyncClient(base_url=base_url(live)) as client:
        tenant = await live.tenant(credits=10)
        await add_user(store, tenant, "carol@c.test")
        reply = await send(live.port, tenant.key, tenant.sender, ["x@dest.test"], message(tenant.sender))
        assert reply.code == 250
        sent_id = await store.pool.fetchval("SELECT id FROM messages WHERE account_id = $1", tenant.account_id)
        await login(client, "carol@c.test")
        page = await client.get("/overview")
        assert page.status_code == 200
        assert "Balance: <strong>9</strong> credits" in page.text
        assert f'<a href="/logs/{sent_id}">' in page.text and "-1" in page.text  # the debit, linked
        today = (await store.pool.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")).isoformat()
        assert f"<tr><th scope=\"row\">{today}</th><td>1</td><td>0</td><td>0</td><td>0</td><td>0</td></tr>" in page.text
        assert "sent: 1" in page.text and f"{today}: 1 sent" in page.text  # legend and the bar's title
        shown = await client.get(f"/logs/{sent_id}")  # the message: its recipient and its events
        assert shown.status_code == 200 and "<td>x@dest.test</td>" in shown.text
        for event in await store.events(sent_id):
            assert event["type"] in shown.text


async def test_dashboard_connections_per_address_are_limited(db_dsn: str, store: Store, peer: Peer) -> None:
    import asyncio

    from tests.conftest import eventually, relay_config, start_relay

    cfg = relay_config(db_dsn, peer.url, dashboard={"listen": "127.0.0.1:0"},
                       http={"max_connections_per_address": 2})
    live = await start_relay(cfg, store, peer)
    try:
        port = live.server.port("dashboard")
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        async with httpx.AsyncClient(base_url=base_url(live)) as client:
            refused = await client.get("/login")  # a third connection from this address
            assert refused.status_code == 503
            for _, writer in held:
                writer.close()

            async def served() -> bool:
                async with httpx.AsyncClient(base_url=base_url(live)) as fresh:
                    return (await fresh.get("/login")).status_code == 200
            await eventually(served, what="slots freed by closed connections are reused")
    finally:
        await live.server.stop(grace=1)
