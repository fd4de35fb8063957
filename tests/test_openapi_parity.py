"""relay/openapi_parity.py against the live API: every documented response of the issue 18 routes is
produced and conforms (the checker of tests/test_openapi.py), and the request schema agrees with the
server on the new send fields."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import LiveRelay, Tenant, database_unreachable, relay_config, start_relay
from tests.http_helpers import body_for
from tests.test_openapi import SMALL, Conformance, _auth, _client, _request_errors, http, in_flight, send

__all__ = ["http"]  # the fixture


@pytest.fixture
async def relay(db_dsn: str, store, peer) -> AsyncIterator[LiveRelay]:
    """The live relay, its shared AUTH throttle loosened: these tests make wrong-key calls on purpose
    and trip the throttle (429 on every route) only at their end."""
    cfg = relay_config(db_dsn, peer.url, smtp={"auth_failures_before_delay": 59, "auth_failures_before_refusal": 60})
    live = await start_relay(cfg, store, peer)
    try:
        yield live
    finally:
        await live.server.stop(grace=1)


async def trip_the_throttle(http: httpx.AsyncClient) -> None:
    """Wrong keys from this address until every key check is refused."""
    for _ in range(70):
        if (await http.get("/v1/messages/x", headers=_auth("rk_000000000000_nope"))).status_code == 429:
            return
    raise AssertionError("the AUTH throttle never refused")


async def test_batch_responses(relay: LiveRelay, http: httpx.AsyncClient, db_dsn, store, peer, pg) -> None:
    c = Conformance()
    path = "/v1/send/batch"
    t = await relay.tenant(credits=100)

    async def batch(body: Any, tenant: Tenant | str | None = t, **headers: str) -> httpx.Response:
        return c.check(await http.post(path, json=body, headers=_auth(tenant, **headers)), path)

    assert (await batch([body_for(t), body_for(t, to="b@dest.test")])).status_code == 200
    assert (await batch([body_for(t), body_for(t, to="bad")])).status_code == 207
    # a suppressed recipient is listed with the entry; all of them suppressed: status suppressed
    sim = "suppressed@simulator.invalid"
    assert (await batch([body_for(t, to=["a@dest.test", sim]), body_for(t, to=sim)])).status_code == 200
    assert (await batch([])).status_code == 400
    assert (await batch([body_for(t)], None)).status_code == 401
    assert (await batch([body_for(t)], "rk_000000000000_nope")).status_code == 401
    disabled = await relay.tenant()
    await relay.store.set_key_enabled(disabled.key_id, False)
    assert (await batch([body_for(disabled)], disabled)).status_code == 403
    assert (await batch([body_for(t)], **{"Idempotency-Key": "b1"})).status_code == 200
    assert (await batch([body_for(t, subject="other")], **{"Idempotency-Key": "b1"})).status_code == 409
    relay.peer.handler.data_delay = 1.0
    slow = asyncio.create_task(batch([body_for(t, subject="slow")], **{"Idempotency-Key": "b2"}))
    async with in_flight(relay, slow):
        again = await batch([body_for(t, subject="slow")], **{"Idempotency-Key": "b2"})
        assert again.status_code == 409 and again.json()["code"] == "IDEMPOTENCY_IN_FLIGHT"
    relay.peer.handler.data_delay = 0.0
    limited = await relay.tenant(rate=1)
    assert (await batch([body_for(limited)], limited)).status_code == 200
    assert (await batch([body_for(limited)], limited)).status_code == 429
    async with database_unreachable(relay, pg.admin_dsn):
        assert (await batch([body_for(t)])).status_code == 503
    small = await start_relay(relay_config(db_dsn, peer.url, limits={"max_message_bytes": SMALL}), store, peer)
    try:
        s = await small.tenant(credits=10, sender="big@example.com")
        async with _client(small) as small_http:
            big = [body_for(s, text="x" * (600 * 1024)), body_for(s, text="y" * (600 * 1024))]
            response = c.check(await small_http.post(path, json=big, headers=_auth(s)), path)
            assert response.status_code == 413
    finally:
        await small.server.stop(grace=1)
    await trip_the_throttle(http)
    assert (await batch([body_for(t)])).json()["error"] == "too many failed authentication attempts from your address"
    c.assert_all_produced(path, "post")


async def test_cancel_responses(relay: LiveRelay, http: httpx.AsyncClient) -> None:
    c = Conformance()
    path = "/v1/messages/{messageId}"
    t = await relay.tenant(credits=100)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scheduled = (await send(http, t, body_for(t, send_at=later))).json()
    assert scheduled["status"] == "scheduled"
    mid = scheduled["messageId"]

    async def cancel(message_id: str, tenant: Tenant | str | None = t) -> httpx.Response:
        return c.check(await http.delete(f"/v1/messages/{message_id}", headers=_auth(tenant)), path)

    assert (await cancel(mid, None)).status_code == 401
    assert (await cancel(mid, "rk_000000000000_nope")).status_code == 401
    disabled = await relay.tenant()
    await relay.store.set_key_enabled(disabled.key_id, False)
    assert (await cancel(mid, disabled)).status_code == 403
    assert (await cancel("not-a-uuid")).status_code == 404
    assert (await cancel(mid)).status_code == 200
    assert (await cancel(mid)).status_code == 409
    looked = c.check(await http.get(f"/v1/messages/{mid}", headers=_auth(t)), path)
    assert looked.json()["status"] == "cancelled"
    await trip_the_throttle(http)
    assert (await cancel(mid)).status_code == 429
    c.assert_all_produced(path, "delete")


async def test_resend_responses(relay: LiveRelay, http: httpx.AsyncClient) -> None:
    c = Conformance()
    t = await relay.tenant(credits=100)
    body = {"from": t.sender, "to": ["a@dest.test"], "subject": "hi", "html": "<p>hi</p>"}

    async def post(path: str, doc: Any, tenant: Tenant | str | None = t, **headers: str) -> httpx.Response:
        return c.check(await http.post(path, json=doc, headers=_auth(tenant, **headers)), path)

    async def get(path: str, email_id: str, tenant: Tenant | str | None = t) -> httpx.Response:
        return c.check(await http.get(path.replace("{emailId}", email_id), headers=_auth(tenant)), path)

    disabled = await relay.tenant()
    await relay.store.set_key_enabled(disabled.key_id, False)
    broke = await relay.tenant(credits=0, sender="broke@example.com")
    limited = await relay.tenant(rate=1, sender="limited@example.com")

    sent = await post("/emails", body)
    assert sent.status_code == 200
    assert (await post("/emails", body, None)).status_code == 401
    assert (await post("/emails", body, "rk_000000000000_nope")).status_code == 403
    assert (await post("/emails", body, **{"Idempotency-Key": "r1"})).status_code == 200
    assert (await post("/emails", body | {"subject": "x"}, **{"Idempotency-Key": "r1"})).status_code == 409
    relay.peer.handler.data_delay = 1.0
    slow = asyncio.create_task(post("/emails", body, **{"Idempotency-Key": "r2"}))
    async with in_flight(relay, slow):
        assert (await post("/emails", body, **{"Idempotency-Key": "r2"})).json()["name"] == \
            "concurrent_idempotent_requests"
    relay.peer.handler.data_delay = 0.0
    assert (await post("/emails", {"to": "a@dest.test", "html": "x"})).json()["name"] == "missing_required_field"
    assert (await post("/emails", body | {"template": {"id": "x"}})).json()["name"] == "validation_error"
    assert (await post("/emails", body | {"from": broke.sender}, broke)).json()["name"] == "monthly_quota_exceeded"
    assert (await post("/emails", body | {"from": limited.sender}, limited)).status_code == 200
    assert (await post("/emails", body | {"from": limited.sender}, limited)).json()["name"] == "rate_limit_exceeded"
    relay.peer.handler.data_reply = "550 5.1.1 User unknown"
    assert (await post("/emails", body)).status_code == 500
    relay.peer.handler.data_reply = None

    assert (await post("/emails/batch", [body, body | {"to": "b@dest.test"}])).status_code == 200
    assert (await post("/emails/batch", [body, body | {"to": "bad"}], **{"x-batch-validation": "permissive"})
            ).json()["errors"][0]["index"] == 1
    assert (await post("/emails/batch", [body], None)).status_code == 401
    assert (await post("/emails/batch", [body], disabled)).status_code == 403
    assert (await post("/emails/batch", [body, {"to": "x@dest.test", "html": "x"}])).json()["name"] == \
        "missing_required_field"
    assert (await post("/emails/batch", {"not": "a list"})).json()["name"] == "validation_error"

    email_id = sent.json()["id"]
    assert (await get("/emails/{emailId}", email_id)).json()["last_event"] == "sent"
    assert (await get("/emails/{emailId}", email_id, None)).status_code == 401
    assert (await get("/emails/{emailId}", email_id, disabled)).status_code == 403
    assert (await get("/emails/{emailId}", "nope")).status_code == 404

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scheduled = (await post("/emails", body | {"scheduled_at": later})).json()["id"]
    cancel = "/emails/{emailId}/cancel"
    for response in (
        c.check(await http.post(cancel.replace("{emailId}", scheduled), headers=_auth(None)), cancel),
        c.check(await http.post(cancel.replace("{emailId}", scheduled), headers=_auth(disabled)), cancel),
        c.check(await http.post(cancel.replace("{emailId}", "nope"), headers=_auth(t)), cancel),
        c.check(await http.post(cancel.replace("{emailId}", scheduled), headers=_auth(t)), cancel),
        c.check(await http.post(cancel.replace("{emailId}", scheduled), headers=_auth(t)), cancel),
    ):
        assert response.status_code in (200, 401, 403, 404, 422)
    await trip_the_throttle(http)
    assert (await post("/emails", body)).status_code == 429
    assert (await post("/emails/batch", [body])).status_code == 429
    assert (await get("/emails/{emailId}", email_id)).status_code == 429
    assert c.check(await http.post(cancel.replace("{emailId}", scheduled), headers=_auth(t)), cancel).status_code == 429
    for path, method in (("/emails", "post"), ("/emails/batch", "post"), ("/emails/{emailId}", "get"),
                         (cancel, "post")):
        c.assert_all_produced(path, method)


def _cases(sender: str) -> list[tuple[str, dict[str, Any]]]:
    base: dict[str, Any] = {"from": sender, "to": "rcpt@dest.test", "text": "hello"}
    file = {"filename": "a.txt", "content": base64.b64encode(b"hello").decode()}
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    return [
        ("attachment", base | {"attachments": [file]}),
        ("inline attachment", base | {"attachments": [file | {"content_id": "c1", "disposition": "inline"}]}),
        ("attachment without content", base | {"attachments": [{"filename": "a.txt"}]}),
        ("attachment with an unknown field", base | {"attachments": [file | {"path": "/etc/passwd"}]}),
        ("tags", base | {"tags": [{"name": "a", "value": "b"}]}),
        ("tag with a space", base | {"tags": [{"name": "a b", "value": "b"}]}),
        ("eleven tags", base | {"tags": [{"name": f"t{i}", "value": "v"} for i in range(11)]}),
        ("metadata", base | {"metadata": {"a": [1, 2]}}),
        ("metadata a list", base | {"metadata": [1]}),
        ("unsubscribe", base | {"unsubscribe_url": "https://x.test/u?a=1"}),
        ("unsubscribe over http", base | {"unsubscribe_url": "http://x.test/u"}),
        ("scheduled", base | {"send_at": later}),
        ("nulls", base | {"attachments": None, "tags": None, "metadata": None, "send_at": None,
                          "unsubscribe_url": None}),
    ]


async def test_the_request_schema_agrees_on_the_new_fields(relay: LiveRelay, http: httpx.AsyncClient) -> None:
    c = Conformance()
    t = await relay.tenant(credits=1000)
    disagreements = []
    for name, body in _cases(t.sender):
        response = c.check(await send(http, t, body), "/v1/send")
        assert response.status_code in (200, 202, 400), (name, response.text)
        if (response.status_code != 400) != (not _request_errors(body)):
            disagreements.append((name, response.status_code, _request_errors(body)[:2]))
    assert not disagreements
