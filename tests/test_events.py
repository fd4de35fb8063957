"""Issue 13 end to end: recipients, events, the suppression list and the mailbox simulator, through
real SMTP and HTTP clients against a live relay; every path proves the credits reconcile."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import aiosmtplib
import httpx
import pytest

from tests.conftest import LiveRelay, relay_config, start_relay
from tests.smtp_helpers import login, message, send


@pytest.fixture
async def live(db_dsn, store, peer) -> AsyncIterator[LiveRelay]:
    relay = await start_relay(relay_config(db_dsn, peer.url), store, peer)
    try:
        yield relay
    finally:
        await relay.server.stop(grace=1)


@pytest.fixture
async def http(live: LiveRelay) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{live.server.port('http')}", timeout=15) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_sent_message_shows_its_subject_recipients_and_events(live, http) -> None:
    t = await live.tenant(credits=10)
    r = await http.post("/v1/send", headers=bearer(t.key), json={
        "from": t.sender, "to": ["one@dest.test", "two@dest.test"], "subject": "Your receipt", "text": "hi"})
    assert r.status_code == 200, r.text
    mid = r.json()["messageId"]
    doc = (await http.get(f"/v1/messages/{mid}", headers=bearer(t.key))).json()
    assert doc["subject"] == "Your receipt"
    assert doc["recipients"] == [{"address": "one@dest.test", "status": "sent"},
                                 {"address": "two@dest.test", "status": "sent"}]
    assert [e["type"] for e in doc["events"]] == ["email.sent"]
    sent = doc["events"][0]
    assert sent["messageId"] == mid and sent["recipient"] is None and uuid.UUID(sent["id"])
    assert sent["data"]["recipients"] == ["one@dest.test", "two@dest.test"]
    rows = await live.store.logs(account_id=t.account_id)
    assert rows[0]["recipients"] == doc["recipients"] and rows[0]["events"][0]["type"] == "email.sent"
    assert await live.balance(t) == 8


async def test_smtp_subject_and_a_refused_recipient_are_recorded(live) -> None:
    t = await live.tenant(credits=10)
    live.peer.handler.rcpt_replies["bad@dest.test"] = "550 5.1.1 no such user"
    reply = await send(live.port, t.key, t.sender, ["good@dest.test", "bad@dest.test"],
                       message(t.sender, extra_headers="X-Other: 1\r\n"))
    mid = reply.message.split()[-1]
    row = await live.store.message_with_details(uuid.UUID(mid))
    assert row is not None and row["subject"] == "test"
    assert row["recipients"] == [{"address": "good@dest.test", "status": "sent"},
                                 {"address": "bad@dest.test", "status": "failed"}]
    types = [(e["type"], e["recipient"]) for e in row["events"]]
    assert types == [("email.sent", None), ("email.failed", "bad@dest.test")]
    assert row["credits_refunded"] == 1 and await live.balance(t) == 9


async def test_a_failed_relay_is_one_failed_event_with_its_code_and_a_refund(live, http) -> None:
    t = await live.tenant(credits=10)
    live.peer.handler.data_reply = "554 5.7.1 rejected: spam content"
    r = await http.post("/v1/send", headers=bearer(t.key), json={"from": t.sender, "to": "x@dest.test", "text": "hi"})
    assert r.status_code == 502
    events = await live.store.events(uuid.UUID(r.json()["messageId"]))
    assert [e["type"] for e in events] == ["email.failed"]
    assert events[0]["data"]["failureCode"] is not None and events[0]["data"]["refunded"] == 1
    assert await live.balance(t) == 10


async def test_suppressed_recipients_are_skipped_not_charged_and_listed(live, http) -> None:
    t = await live.tenant(credits=10)
    r = await http.post("/v1/suppressions", headers=bearer(t.key), json={"address": "Gone@Dest.test"})
    assert r.status_code == 201 and r.json()["suppression"]["reason"] == "manual"
    r = await http.post("/v1/send", headers=bearer(t.key), json={
        "from": t.sender, "to": ["gone@dest.test", "here@dest.test"], "text": "hi"})
    assert r.status_code == 200, r.text
    assert r.json() == {"ok": True, "messageId": r.json()["messageId"], "status": "sent",
                        "suppressed": ["gone@dest.test"]}
    assert [m.recipients for m in live.peer.messages] == [["here@dest.test"]]
    assert await live.balance(t) == 9  # one recipient charged
    row = await live.store.message_with_details(uuid.UUID(r.json()["messageId"]))
    assert row is not None and row["credits_charged"] == 1
    assert {(e["type"], e["recipient"]) for e in row["events"]} == {
        ("email.suppressed", "gone@dest.test"), ("email.sent", None)}


async def test_every_recipient_suppressed_is_200_suppressed_nothing_sent_or_charged(live, http) -> None:
    t = await live.tenant(credits=10)
    await live.store.add_suppression(t.account_id, "a@dest.test")
    await live.store.add_suppression(t.account_id, "b@dest.test", "complaint")
    r = await http.post("/v1/send", headers=bearer(t.key), json={
        "from": t.sender, "to": ["a@dest.test"], "cc": "b@dest.test", "text": "hi"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "suppressed" and doc["suppressed"] == ["a@dest.test", "b@dest.test"]
    assert live.peer.messages == [] and await live.balance(t) == 10
    row = await live.store.message_with_details(uuid.UUID(doc["messageId"]))
    assert row is not None and row["status"] == "suppressed" and row["credits_charged"] == 0
    assert [(e["type"], e["recipient"], e["data"]["reason"]) for e in row["events"]] == [
        ("email.suppressed", "a@dest.test", "manual"), ("email.suppressed", "b@dest.test", "complaint")]
    listed = (await http.get("/v1/suppressions", headers=bearer(t.key))).json()["suppressions"]
    assert {s["address"] for s in listed} == {"a@dest.test", "b@dest.test"}
    assert (await http.delete("/v1/suppressions/a@dest.test", headers=bearer(t.key))).status_code == 200
    assert (await http.delete("/v1/suppressions/a@dest.test", headers=bearer(t.key))).status_code == 404


async def test_smtp_rcpt_to_a_suppressed_address_is_550_and_the_others_proceed(live) -> None:
    t = await live.tenant(credits=10)
    await live.store.add_suppression(t.account_id, "gone@dest.test", "hard_bounce")
    client = await login(live.port, t.key)
    try:
        await client.mail(t.sender)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt("Gone@dest.test")
        assert refused.value.code == 550
        assert refused.value.message == ("5.1.1 <Gone@dest.test>: recipient is on the suppression list "
                                         "(hard_bounce)")
        await client.rcpt("ok@dest.test")
        reply = await client.data(message(t.sender))
        assert reply.code == 250
    finally:
        client.close()
    assert [m.recipients for m in live.peer.messages] == [["ok@dest.test"]]
    assert await live.balance(t) == 9


async def test_a_suppression_added_after_rcpt_is_still_skipped_at_admit(live) -> None:
    """The list loaded with the key may be a moment old; relay_admit checks again and is the authority."""
    t = await live.tenant(credits=10)
    client = await login(live.port, t.key)
    try:
        await client.mail(t.sender)
        await client.rcpt("late@dest.test")
        await client.rcpt("ok@dest.test")
        await live.store.add_suppression(t.account_id, "late@dest.test")
        reply = await client.data(message(t.sender))
        assert reply.code == 250
    finally:
        client.close()
    assert [m.recipients for m in live.peer.messages] == [["ok@dest.test"]]
    assert await live.balance(t) == 9


async def test_suppression_is_per_account(live, http) -> None:
    a = await live.tenant(credits=10)
    b = await live.tenant(credits=10)
    await live.store.add_suppression(a.account_id, "x@dest.test")
    r = await http.post("/v1/send", headers=bearer(b.key), json={"from": b.sender, "to": "x@dest.test", "text": "hi"})
    assert r.status_code == 200 and r.json()["status"] == "sent" and await live.balance(b) == 9
    assert (await http.get("/v1/suppressions", headers=bearer(b.key))).json()["suppressions"] == []


async def test_suppression_api_rejects_bad_input_and_bad_keys(live, http) -> None:
    t = await live.tenant(credits=10)
    assert (await http.post("/v1/suppressions", headers=bearer(t.key), json={"address": "nope"})).status_code == 400
    assert (await http.post("/v1/suppressions", headers=bearer(t.key), content=b"[")).status_code == 400
    assert (await http.get("/v1/suppressions")).status_code == 401
    assert (await http.get("/v1/suppressions", headers=bearer("rk_x_y"))).status_code == 401


async def test_queued_messages_have_a_queued_event_and_recipients(live, http) -> None:
    t = await live.tenant(credits=10, daily_cap=0)
    r = await http.post("/v1/send", headers=bearer(t.key), json={"from": t.sender, "to": "q@dest.test", "text": "hi"})
    assert r.status_code == 202
    row = await live.store.message_with_details(uuid.UUID(r.json()["messageId"]))
    assert row is not None
    assert row["recipients"] == [{"address": "q@dest.test", "status": "queued"}]
    assert [e["type"] for e in row["events"]] == ["email.queued"]


SIM = "simulator.invalid"


async def test_the_mailbox_simulator_yields_each_outcome_and_charges_like_any_recipient(live, http) -> None:
    t = await live.tenant(credits=10)
    to = [f"delivered@{SIM}", f"bounce@{SIM}", f"ooto@{SIM}", f"complaint@{SIM}", f"suppressed@{SIM}"]
    r = await http.post("/v1/send", headers=bearer(t.key), json={"from": t.sender, "to": to, "text": "hi"})
    assert r.status_code == 200, r.text
    assert r.json()["suppressed"] == [f"suppressed@{SIM}"]
    assert live.peer.messages == []  # never relayed
    assert await live.balance(t) == 6  # four charged, the suppressed one not
    mid = uuid.UUID(r.json()["messageId"])
    types = {(e["type"], e["recipient"]) for e in await live.store.events(mid)}
    assert types >= {("email.sent", None), ("email.bounced", f"bounce@{SIM}"),
                     ("email.auto_replied", f"ooto@{SIM}"), ("email.complained", f"complaint@{SIM}"),
                     ("email.suppressed", f"suppressed@{SIM}")}
    bounced = next(e for e in await live.store.events(mid) if e["type"] == "email.bounced")
    assert bounced["data"]["failureCode"] == 2001
    ooto = next(e for e in await live.store.events(mid) if e["type"] == "email.auto_replied")
    assert ooto["data"]["failureCode"] == 5001
    listed = {s["address"]: s["reason"] for s in await live.store.suppressions(t.account_id)}
    assert listed == {f"bounce@{SIM}": "hard_bounce", f"complaint@{SIM}": "complaint"}
    # the next send to the bounced address is skipped and not charged
    r = await http.post("/v1/send", headers=bearer(t.key), json={"from": t.sender, "to": f"bounce@{SIM}", "text": "x"})
    assert r.json()["status"] == "suppressed" and await live.balance(t) == 6


async def test_smtp_rcpt_to_the_simulator_suppressed_address_is_550(live) -> None:
    t = await live.tenant(credits=10)
    client = await login(live.port, t.key)
    try:
        await client.mail(t.sender)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt(f"suppressed@{SIM}")
        assert refused.value.code == 550 and "suppression list (simulator)" in refused.value.message
    finally:
        client.close()
    assert await live.balance(t) == 10


async def test_simulator_recipients_can_be_made_free(db_dsn, store, peer) -> None:
    relay = await start_relay(relay_config(db_dsn, peer.url, events={"simulator_free": True}), store, peer)
    try:
        t = await relay.tenant(credits=10)
        reply = await send(relay.port, t.key, t.sender, [f"delivered@{SIM}", "real@dest.test"], message(t.sender))
        assert reply.code == 250
        assert [m.recipients for m in peer.messages] == [["real@dest.test"]]
        assert await relay.balance(t) == 9
    finally:
        await relay.server.stop(grace=1)


async def test_relay_events_and_logs_commands_show_events(live, http, db_dsn) -> None:
    from tests.test_cli import run

    t = await live.tenant(credits=10)
    r = await http.post("/v1/send", headers=bearer(t.key), json={"from": t.sender, "to": "a@dest.test", "text": "hi"})
    mid = r.json()["messageId"]
    code, out, err = await run(db_dsn, "events", mid, "--json")
    assert code == 0, err
    assert [e["type"] for e in json.loads(out)] == ["email.sent"]
    code, out, err = await run(db_dsn, "logs", "--json")
    assert code == 0, err
    row = next(r for r in json.loads(out) if r["id"] == mid)
    assert row["recipients"] == [{"address": "a@dest.test", "status": "sent"}] and row["events"]
    code, _, err = await run(db_dsn, "events", str(uuid.uuid4()))
    assert code == 1 and err.startswith("relay: no such message")
    code, out, err = await run(db_dsn, "suppression", "add", str(t.account_id), "Z@dest.test", "--json")
    assert code == 0 and json.loads(out)["address"] == "z@dest.test", err
    code, out, _ = await run(db_dsn, "suppression", "list", str(t.account_id), "--json")
    assert [s["address"] for s in json.loads(out)] == ["z@dest.test"]
    code, _, _ = await run(db_dsn, "suppression", "remove", str(t.account_id), "z@dest.test")
    assert code == 0
    code, _, err = await run(db_dsn, "suppression", "remove", str(t.account_id), "z@dest.test")
    assert code == 1 and "not on" in err


async def test_a_queued_delivery_retried_is_delivery_delayed_then_sent(live) -> None:
    from datetime import timedelta

    from tests.test_queue import FAST, worker

    t = await live.tenant(credits=10, daily_cap=0)
    reply = await send(live.port, t.key, t.sender, ["q@dest.test"], message(t.sender))
    mid = uuid.UUID(reply.message.removeprefix("queued: "))
    due = (await live.store.message(mid))["deliver_after"] + timedelta(minutes=1)
    w = worker(live.store, live.peer, lambda: due, FAST)
    live.peer.handler.mail_reply = "451 4.7.1 Greylisted, try again later"
    assert (await w.deliver_due()).retried == 1
    live.peer.handler.mail_reply = None
    due += timedelta(hours=1)
    assert (await w.deliver_due()).sent == 1
    await w.upstream.close()
    events = await live.store.events(mid)
    assert [e["type"] for e in events] == ["email.queued", "email.delivery_delayed", "email.sent"]
    delayed = events[1]["data"]
    assert delayed["attempt"] == 1 and delayed["reply"].startswith("451") and delayed["nextAttemptAt"]
    row = await live.store.message_with_details(mid)
    assert row is not None and row["recipients"] == [{"address": "q@dest.test", "status": "sent"}]
    assert await live.balance(t) == 9
