"""Managing inbound routes: the `relay route|inbound|webhook secret` commands, /v1/routes and
/v1/inbound/{id} against the OpenAPI document, and the claimant hook ahead of the routes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiosmtplib
import httpx
import pytest
import standardwebhooks

from relay.inbound.payload import Envelope
from relay.inbound.replies import Severity, Verdict
from tests.conftest import database_unreachable
from tests.http_target import Target, serve_target
from tests.inbound_helpers import message, serve_inbound
from tests.test_cli import assert_one_line_error, run
from tests.test_openapi import Conformance


@pytest.fixture
async def app() -> Target:
    async with serve_target() as target:
        yield target  # type: ignore[misc]


# --- the command line -----------------------------------------------------------------------------

async def test_route_commands(db_dsn, store, app: Target) -> None:
    allow = {"RELAY_INBOUND_ALLOW_PRIVATE_TARGETS": "true"}
    await run(db_dsn, "account", "create", "acme")
    code, out, err = await run(db_dsn, "route", "add", "acme", "*@Inbound.Test", app.url("/hook"), "--format", "raw",
                               "--priority", "5", "--oversize-text", "too big", "--json", env=allow)
    assert code == 0, err
    created = json.loads(out)
    assert (created["match"], created["format"], created["priority"], created["oversize_text"]) == (
        "*@inbound.test", "raw", 5, "too big")
    assert created["signing_secret"].startswith("whsec_")
    code, out, _ = await run(db_dsn, "webhook", "secret", "acme")
    assert (code, out.strip()) == (0, created["signing_secret"])
    code, out, _ = await run(db_dsn, "route", "add", "acme", "/^vip-.*@inbound\\.test$/", app.url("/vip"),
                             "--priority", "1", env=allow)
    assert code == 0 and "signing secret" not in out  # shown with the first route only
    code, out, _ = await run(db_dsn, "route", "list", "acme", "--json")
    assert [r["match"] for r in json.loads(out)] == ["/^vip-.*@inbound\\.test$/", "*@inbound.test"]
    code, out, _ = await run(db_dsn, "route", "remove", created["id"], "--json")
    assert (code, json.loads(out)) == (0, {"id": created["id"], "removed": True})
    code, _, err = await run(db_dsn, "route", "remove", created["id"])
    assert_one_line_error(code, err, "no route")
    code, out, _ = await run(db_dsn, "inbound", "logs", "--json")
    assert (code, json.loads(out)) == (0, [])


@pytest.mark.parametrize(("args", "expected"), [
    (["acme", "no-at-sign", "https://8.8.8.8/"], "is not an address"),
    (["acme", "/([/", "https://8.8.8.8/"], "does not compile"),
    (["acme", "*@x.test", "ftp://8.8.8.8/"], "only http and https"),
    (["acme", "*@x.test", "http://127.0.0.1:9/hook"], "loopback"),
    (["acme", "*@x.test", "http://169.254.169.254/"], "link-local"),
    (["acme", "*@x.test", "http://10.0.0.8/"], "private"),
    (["acme", "*@x.test", "http://no-such-host.invalid/"], "does not resolve"),
    (["acme", "*@x.test", "https://8.8.8.8/", "--oversize-text", "two\nlines"], "oversize text"),
    (["nobody", "*@x.test", "https://8.8.8.8/"], "no account"),
])
async def test_route_add_refusals(db_dsn, store, args: list[str], expected: str) -> None:
    await run(db_dsn, "account", "create", "acme")
    code, _, err = await run(db_dsn, "route", "add", *args)
    assert_one_line_error(code, err, expected)
    assert await store.list_routes() == []


# --- the API --------------------------------------------------------------------------------------

def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


async def test_routes_api_against_the_document(db_dsn, store, peer, pg, app: Target) -> None:
    c = Conformance()
    # a few dozen wrong-key calls are made on purpose before the shared AUTH throttle (429) trips
    throttle = {"auth_failures_before_delay": 59, "auth_failures_before_refusal": 60}
    async with serve_inbound(db_dsn, store, peer, smtp=throttle) as inbound:
        live = inbound.live
        mine = await live.tenant(sender="app@inbound.test")
        other = await live.tenant(sender="app@other.test")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{live.server.port('http')}", timeout=15) as http:

            async def post(body: Any, key: str | None = mine.key, **kw: Any) -> httpx.Response:
                if "content" not in kw:
                    kw["json"] = body
                return c.check(await http.post("/v1/routes", headers=_auth(key), **kw), "/v1/routes")

            created = await post({"match": "*@inbound.test", "url": app.url("/status/200"), "priority": 3,
                                  "oversize_text": "too big"})
            assert created.status_code == 201, created.text
            route = created.json()["route"]
            assert (route["match"], route["format"], route["priority"]) == ("*@inbound.test", "json", 3)
            theirs = (await post({"match": "support@other.test", "url": app.url("/x"), "format": "raw"},
                                 other.key)).json()["route"]
            for body, why in (
                ({"match": "/.*/", "url": app.url("/x")}, "regular-expression"),
                ({"match": "*@other.test", "url": app.url("/x")}, "not one of this account's sender domains"),
                ({"match": "*@inbound.test"}, "match and url"),
                ({"match": "*@inbound.test", "url": app.url("/x"), "colour": "red"}, "unknown field"),
                ({"match": "*@inbound.test", "url": "gopher://x/"}, "only http and https"),
                ({"match": "*@inbound.test", "url": app.url("/x"), "format": "xml"}, "format"),
                ({"match": "*@inbound.test", "url": app.url("/x"), "priority": "high"}, "priority"),
                ([1, 2], "match and url"),
            ):
                refused = await post(body)
                assert refused.status_code == 400 and why in refused.json()["error"], (body, refused.text)
            assert (await post(None, content=b"{nope")).status_code == 400
            assert (await post(None, content=b"x" * 20000)).status_code == 413

            listed = c.check(await http.get("/v1/routes", headers=_auth(mine.key)), "/v1/routes")
            assert [r["id"] for r in listed.json()["routes"]] == [route["id"]]  # never another account's

            # a message through the route shows up in the account's inbound log
            code, _, _ = await inbound.smtplib_send("a@example.org", ["x@inbound.test"], message())
            assert code == 250
            [row] = await inbound.logs(1)
            path = "/v1/inbound/{inboundId}"
            got = c.check(await http.get(f"/v1/inbound/{row.id}", headers=_auth(mine.key)), path)
            assert got.status_code == 200 and got.json()["route_id"] == route["id"]
            assert got.json()["channel"] == "inbound" and got.json()["http_status"] == 200
            for wrong, key in ((str(row.id), other.key), ("not-a-uuid", mine.key), (str(uuid.uuid4()), mine.key)):
                assert c.check(await http.get(f"/v1/inbound/{wrong}", headers=_auth(key)), path).status_code == 404

            delete = "/v1/routes/{routeId}"
            assert c.check(await http.delete(f"/v1/routes/{theirs['id']}", headers=_auth(mine.key)),
                           delete).status_code == 404
            assert c.check(await http.delete("/v1/routes/rt_nope", headers=_auth(mine.key)), delete).status_code == 404

            disabled = await live.tenant(sender="app@third.test")
            await live.store.set_key_enabled(disabled.key_id, False)
            for key, status in ((None, 401), ("rk_000000000000_nope", 401), (disabled.key, 403)):
                assert (await post({"match": "*@inbound.test", "url": app.url("/x")}, key)).status_code == status
                assert c.check(await http.get("/v1/routes", headers=_auth(key)), "/v1/routes").status_code == status
                assert c.check(await http.get(f"/v1/inbound/{row.id}", headers=_auth(key)), path).status_code == status
                assert c.check(await http.delete(f"/v1/routes/{route['id']}", headers=_auth(key)),
                               delete).status_code == status
            async with database_unreachable(live, pg.admin_dsn):
                assert (await post({"match": "*@inbound.test", "url": app.url("/x")})).status_code == 503
                assert c.check(await http.get("/v1/routes", headers=_auth(mine.key)), "/v1/routes").status_code == 503
                assert c.check(await http.get(f"/v1/inbound/{row.id}", headers=_auth(mine.key)),
                               path).status_code == 503
                assert c.check(await http.delete(f"/v1/routes/{route['id']}", headers=_auth(mine.key)),
                               delete).status_code == 503

            deleted = c.check(await http.delete(f"/v1/routes/{route['id']}", headers=_auth(mine.key)), delete)
            assert deleted.status_code == 200 and deleted.json() == {"ok": True, "id": route["id"]}
            assert await store.list_routes(mine.account_id) == []

            for _ in range(70):  # wrong keys until this address is refused: then every route says 429
                if (await http.get("/v1/routes", headers=_auth("rk_000000000000_nope"))).status_code == 429:
                    break
            assert (await post({"match": "*@inbound.test", "url": app.url("/x")})).status_code == 429
            assert c.check(await http.get("/v1/routes", headers=_auth(mine.key)), "/v1/routes").status_code == 429
            assert c.check(await http.get(f"/v1/inbound/{row.id}", headers=_auth(mine.key)), path).status_code == 429
            assert c.check(await http.delete(f"/v1/routes/{route['id']}", headers=_auth(mine.key)),
                           delete).status_code == 429
        for path_, method in (("/v1/routes", "get"), ("/v1/routes", "post"), (delete, "delete"), (path, "get")):
            c.assert_all_produced(path_, method)


async def test_private_targets_refused_at_creation_over_the_api(relay, app: Target) -> None:
    tenant = await relay.tenant(sender="app@inbound.test")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{relay.server.port('http')}", timeout=15) as http:
        response = await http.post("/v1/routes", headers=_auth(tenant.key),
                                   json={"match": "*@inbound.test", "url": app.url("/status/200")})
    assert response.status_code == 400 and "loopback" in response.json()["error"]
    assert await relay.store.list_routes() == []


# --- the claimant hook (issue 13's bounces plug in here) -----------------------------------------------

class Collector:
    """A claimant as the bounce processor would be: it takes b+...@bounces.test ahead of every route."""

    name = "test-bounces"

    def __init__(self) -> None:
        self.got: list[tuple[bytes, Envelope]] = []

    def claims(self, address: str) -> bool:
        return address.lower().startswith("b+") and address.lower().endswith("@bounces.test")

    async def receive(self, data: bytes, envelope: Envelope) -> Verdict:
        self.got.append((data, envelope))
        return Verdict("250 2.0.0 OK", Severity.DELIVERED, 0, "")


async def test_claimants_take_their_recipients_before_any_route(db_dsn, store, peer, app: Target) -> None:
    async with serve_inbound(db_dsn, store, peer) as inbound:
        collector = Collector()
        channel = inbound.live.server.channel("inbound")
        channel.inbound_handler.claimants.append(collector)  # type: ignore[attr-defined]
        account = await inbound.account()
        _, secret = await inbound.route(account, "/.*/", app.url("/status/200"))  # would take anything
        code, _, refused = await inbound.smtplib_send("", ["b+tok123@bounces.test", "person@inbound.test"], message())
        assert (code, refused) == (250, {})
        [(data, envelope)] = collector.got
        assert envelope.recipients == ("b+tok123@bounces.test",) and envelope.mail_from == ""
        assert data.startswith(b"Received: ") and b"Hello app" in data
        [posted] = app.received  # the route got only its own recipient
        doc = standardwebhooks.Webhook(secret).verify(posted.body, posted.headers)
        assert doc["envelope"]["recipients"] == ["person@inbound.test"]
        # a claimant's 451 counts in the worst-of like any route's
        collector.receive = _deferring  # type: ignore[method-assign]
        code, text, _ = await inbound.smtplib_send("", ["b+x@bounces.test", "person@inbound.test"], message())
        assert (code, text) == (451, b"4.3.0 try later")


async def test_secrets_unreadable_at_data_is_451_before_any_claimant(db_dsn, store, peer, pg, app: Target) -> None:
    # the 451 makes the sender send again: a claimant that had taken the message would take it twice
    async with serve_inbound(db_dsn, store, peer, route_cache_seconds=0.0) as inbound:
        collector = Collector()
        channel = inbound.live.server.channel("inbound")
        channel.inbound_handler.claimants.append(collector)  # type: ignore[attr-defined]
        account = await inbound.account()
        await inbound.route(account, "*@inbound.test", app.url("/status/200"))
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=inbound.port) as client:
            await client.mail("")
            await client.rcpt("b+tok123@bounces.test")
            await client.rcpt("person@inbound.test")
            async with database_unreachable(inbound.live, pg.admin_dsn):
                with pytest.raises(aiosmtplib.SMTPDataError) as deferred:
                    await client.data(message().encode())
        assert (deferred.value.code, deferred.value.message) == (451, "4.3.0 temporary failure, try again later")
        assert collector.got == [] and app.received == []
        code, _, _ = await inbound.smtplib_send("", ["b+tok123@bounces.test", "person@inbound.test"], message())
        assert code == 250 and len(collector.got) == 1 and len(app.received) == 1  # and once it is back


async def _deferring(data: bytes, envelope: Envelope) -> Verdict:
    return Verdict("451 4.3.0 try later", Severity.DEFERRED, 0, "")


async def test_signing_secret_is_made_once(store) -> None:
    account = await store.create_account("acme")
    assert await store.signing_secret(account.id) is None
    secret, made = await store.ensure_signing_secret(account.id)
    assert made and secret.startswith("whsec_")
    assert await store.ensure_signing_secret(account.id) == (secret, False)
    _route, again, made = await store.create_route(account.id, "*@x.test", "https://8.8.8.8/")
    assert (again, made) == (secret, False)
    assert await store.active_signing_secrets([account.id, 999]) == {account.id: [secret]}


async def test_retention_removes_old_inbound_log_rows(store) -> None:
    from relay.inbound.log import InboundRecord
    rows = [InboundRecord(account_id=1, route_id="rt_x", url="https://8.8.8.8/", recipients=("a@x.test",), sender="",
                          remote_ip="127.0.0.1", size_bytes=10, http_status=200, response_text="", smtp_reply="250",
                          outcome="delivered", duration_ms=1) for _ in range(5)]
    await store.record_inbound(rows)
    async with store.pool.acquire() as conn:
        await conn.execute("UPDATE inbound_log SET created_at = now() - interval '100 days' WHERE id = ANY($1)",
                           [r.id for r in rows[:3]])
    removed = await store.cleanup(keep_bodies_hours=0, log_days=90, batch=2)
    assert removed["inbound_log"] == 3
    assert {r.id for r in await store.inbound_logs()} == {r.id for r in rows[3:]}
