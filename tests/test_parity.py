"""API parity (issue 18) through httpx and the real upstream peer: attachments byte for byte, tags
and metadata on the log row, one-click unsubscribe headers, batches, scheduled sends and cancelling."""

from __future__ import annotations

import base64
import email
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest

from relay.config import LimitsConfig, QueueConfig
from relay.queue import QueueWorker
from relay.upstream.smtp import SmtpUpstream
from tests.conftest import assert_untouched
from tests.http_helpers import assert_failure, body_for, serve_api
from tests.smtp_helpers import send

FAST = QueueConfig(rate_per_second=1000, poll_seconds=0.2, retry_base_seconds=60, retry_max_seconds=3600)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def files(message: EmailMessage) -> dict[str, tuple[str, bytes, str | None, str]]:
    """Every non-body leaf part: filename -> (content type, bytes, Content-ID, disposition)."""
    out = {}
    for part in message.walk():
        if part.is_multipart() or part.get_filename() is None:
            continue
        out[part.get_filename()] = (part.get_content_type(), part.get_payload(decode=True),
                                    part["Content-ID"], part.get_content_disposition())
    return out


# -- attachments ----------------------------------------------------------------------------------


async def test_a_quote_in_a_filename_stays_in_the_name(relay) -> None:
    """A quote ends no quoted-string early: the name arrives whole and adds no parameter of its own."""
    t = await relay.tenant(credits=10)
    names = ['Rechnung "März".pdf', 'é"; name="evil.exe', 'plain "quoted".txt']  # (a backslash is a path)
    async with serve_api(relay) as api:
        r = await api.send(t.key, body_for(t, attachments=[
            {"filename": n, "content": b64(n.encode())} for n in names]))
        assert r.status_code == 200, r.text
    [got] = relay.peer.messages
    found = files(parsed(got.data))
    assert sorted(found) == sorted(names)
    for n in names:
        assert found[n][1] == n.encode()
    leaves = [p for p in parsed(got.data).walk() if p.get_filename() is not None]
    assert all(set(p["Content-Type"].params) <= {"name", "charset"} for p in leaves)


async def test_attachments_arrive_byte_for_byte(relay) -> None:
    t = await relay.tenant(credits=10)
    binary = os.urandom(300_000) + b"\x00\r\n.\r\n\xff" * 50  # any bytes, an SMTP end marker included
    png = bytes.fromhex("89504e470d0a1a0a") + os.urandom(2000)
    async with serve_api(relay) as api:
        r = await api.send(t.key, body_for(
            t, html='<p>logo: <img src="cid:logo@relay"></p>', text="see the logo",
            attachments=[
                {"filename": "data.bin", "content": b64(binary)},
                {"filename": "logo.png", "content": b64(png), "content_id": "logo@relay"},
                {"filename": "C:\\Users\\me\\請求書 №7 résumé.pdf", "content": b64(b"%PDF-1.7 x")},
                {"filename": "notes.txt", "content": b64("héllo\n".encode()), "content_type": "text/plain"},
            ]))
        assert r.status_code == 200, r.text
    [got] = relay.peer.messages
    message = parsed(got.data)
    found = files(message)
    assert found["data.bin"] == ("application/octet-stream", binary, None, "attachment")
    assert found["logo.png"] == ("image/png", png, "<logo@relay>", "inline")
    name = "請求書 №7 résumé.pdf"  # the path is gone, the name kept (RFC 2231 on the wire)
    assert found[name] == ("application/pdf", b"%PDF-1.7 x", None, "attachment")
    assert b"filename*" in got.data and "請求書".encode() not in got.data  # 7bit on the wire
    assert found["notes.txt"][:2] == ("text/plain", "héllo\n".encode())
    # the inline image sits with the html in multipart/related; text is the alternative
    types = [p.get_content_type() for p in message.walk()]
    assert types[:5] == ["multipart/mixed", "multipart/alternative", "text/plain", "multipart/related",
                         "text/html"]
    related = next(p for p in message.walk() if p.get_content_type() == "multipart/related")
    assert [p.get_content_type() for p in related.iter_parts()] == ["text/html", "image/png"]
    assert await relay.balance(t) == 9


async def test_a_9_mb_attachment_arrives_byte_for_byte(relay) -> None:
    t = await relay.tenant(credits=10)
    payload = os.urandom(9 << 20)
    async with serve_api(relay) as api:
        r = await api.send(t.key, body_for(t, attachments=[{"filename": "big.bin", "content": b64(payload)}]))
        assert r.status_code == 200, r.text
        row = (await api.get(f"/v1/messages/{r.json()['messageId']}", t.key)).json()
    assert row["sizeBytes"] == len(payload) + len("hello there")  # what the limit counted
    assert files(parsed(relay.peer.messages[0].data))["big.bin"][1] == payload


async def test_inline_image_with_html_only(relay) -> None:
    t = await relay.tenant(credits=10)
    gif = b"GIF89a" + os.urandom(500)
    async with serve_api(relay) as api:
        r = await api.send(t.key, body_for(t, text=None, html='<img src="cid:pic">',
                                           attachments=[{"filename": "pic.gif", "content": b64(gif),
                                                         "content_id": "<pic>"}]))
        assert r.status_code == 200, r.text
    message = parsed(relay.peer.messages[0].data)
    assert message.get_content_type() == "multipart/related"
    assert files(message)["pic.gif"] == ("image/gif", gif, "<pic>", "inline")


@pytest.mark.parametrize(("attachment", "error"), [
    ({"filename": "bad.pdf", "content": "not base64!"}, "attachments[0] ('bad.pdf'): 'content' is not valid base64"),
    ({"filename": "x.pdf", "content": "QUJ"}, "attachments[0] ('x.pdf'): 'content' is not valid base64"),
    ({"filename": "x.pdf"}, "attachments[0] ('x.pdf'): 'content' is required, as a base64 string"),
    ({"content": "QUJD"}, "attachments[0]: 'filename' is required"),
    ({"filename": "x", "content": "QUJD", "content_type": "pdf"},
     "attachments[0] ('x'): 'content_type' must be a MIME type like application/pdf"),
    ({"filename": "x", "content": "QUJD", "disposition": "form-data"},
     "attachments[0] ('x'): 'disposition' must be 'attachment' or 'inline'"),
    ({"filename": "x", "content": "QUJD", "content_id": "a b"},
     "attachments[0] ('x'): 'content_id' must be 1-200 printable ASCII characters without spaces or "
     "angle brackets"),
])
async def test_bad_attachments_are_refused_naming_them(relay, attachment: dict[str, Any], error: str) -> None:
    t = await relay.tenant(credits=10)
    async with serve_api(relay) as api:
        r = await api.send(t.key, body_for(t, attachments=[attachment]))
        assert_failure(r, 400, "INVALID", error)
    await assert_untouched(relay, t, 10)


async def test_size_limit_counts_decoded_attachments(relay) -> None:
    t = await relay.tenant(credits=10)
    limit = relay.cfg.limits.max_message_bytes
    text = "x" * 1000
    async with serve_api(relay) as api:
        over = await api.send(t.key, body_for(t, text=text, attachments=[
            {"filename": "a.bin", "content": b64(b"\0" * (limit - 1000 + 1))}]))
        assert_failure(over, 413, "TOO_LARGE")
        await assert_untouched(relay, t, 10)
        exact = await api.send(t.key, body_for(t, text=text, attachments=[
            {"filename": "a.bin", "content": b64(b"\0" * (limit - 1000))}]))
        assert exact.status_code == 200, exact.text
    assert await relay.balance(t) == 9


# -- tags, metadata, unsubscribe ------------------------------------------------------------------


async def test_tags_and_metadata_on_the_log_row(relay) -> None:
    t = await relay.tenant(credits=10)
    tags = [{"name": "category", "value": "invoice"}, {"name": "tenant_id", "value": "a-7"}]
    async with serve_api(relay) as api:
        r = await api.send(t.key, body_for(t, tags=tags, metadata={"order": 1234, "note": "été"}))
        assert r.status_code == 200, r.text
        mid = r.json()["messageId"]
        row = (await api.get(f"/v1/messages/{mid}", t.key)).json()
        assert row["tags"] == tags and row["metadata"] == {"order": 1234, "note": "été"}
        plain = await api.send(t.key, body_for(t))
        assert (await api.get(f"/v1/messages/{plain.json()['messageId']}", t.key)).json()["tags"] == []
    # tags and metadata stay out of the relayed message
    assert b"invoice" not in relay.peer.messages[0].data and b"1234" not in relay.peer.messages[0].data
    assert [str(m["id"]) for m in await relay.store.logs(tags={"category": "invoice"})] == [mid]
    assert await relay.store.logs(tags={"category": "receipt"}) == []


@pytest.mark.parametrize(("fields", "error"), [
    ({"tags": [{"name": "a b", "value": "x"}]},
     "tags[0]: the name must be 1-256 ASCII letters, digits, '_' or '-'"),
    ({"tags": [{"name": "a", "value": "é"}]}, "tags[0]: the value must be 1-256 ASCII letters, digits, '_' or '-'"),
    ({"tags": [{"name": f"t{i}", "value": "v"} for i in range(11)]}, "tags: at most 10 tags"),
    ({"tags": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]}, "tags: the tag 'a' is given more than once"),
    ({"tags": {"a": "b"}}, 'field \'tags\' must be a list of {"name", "value"} objects'),
    ({"metadata": [1]}, "field 'metadata' must be a JSON object"),
    ({"metadata": {"k": "v" * 2100}}, "field 'metadata' must be at most 2048 bytes of JSON"),
    ({"metadata": {"k": "a\u0000b"}}, "field 'metadata' must not contain NUL characters"),
    ({"unsubscribe_url": "http://example.com/u"},
     "field 'unsubscribe_url' must be an https:// URL (RFC 8058), at most 808 characters"),
    ({"unsubscribe_url": "https://x.test/u", "headers": {"List-Unsubscribe": "<mailto:u@x.test>"}},
     "give 'unsubscribe_url' or List-Unsubscribe headers, not both"),
    ({"send_at": "tomorrow"}, "field 'send_at': 'tomorrow' is not an RFC 3339 time"),
    ({"send_at": "2030-01-01T10:00:00"}, "field 'send_at' needs a UTC offset (Z or +hh:mm)"),
])
async def test_bad_parity_fields_are_refused(relay, fields: dict[str, Any], error: str) -> None:
    t = await relay.tenant(credits=10)
    async with serve_api(relay) as api:
        assert_failure(await api.send(t.key, body_for(t, **fields)), 400, "INVALID", error)
    await assert_untouched(relay, t, 10)


async def test_send_at_more_than_72_hours_ahead_is_refused(relay) -> None:
    t = await relay.tenant(credits=10)
    when = (datetime.now(UTC) + timedelta(hours=72, minutes=5)).isoformat()
    async with serve_api(relay) as api:
        assert_failure(await api.send(t.key, body_for(t, send_at=when)), 400, "INVALID",
                       "field 'send_at' may be at most 72 hours ahead")
    await assert_untouched(relay, t, 10)


async def test_one_click_unsubscribe_headers(relay) -> None:
    t = await relay.tenant(credits=10)
    url = "https://example.com/unsubscribe?u=42&l=news"
    async with serve_api(relay) as api:
        assert (await api.send(t.key, body_for(t, unsubscribe_url=url))).status_code == 200
    message = parsed(relay.peer.messages[0].data)
    assert message["List-Unsubscribe"] == f"<{url}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


# -- batch ----------------------------------------------------------------------------------------


async def post_batch(api, key: str, batch: Any, headers: dict[str, str] | None = None):
    return await api.client.post("/v1/send/batch", json=batch,
                                 headers={"Authorization": f"Bearer {key}", **(headers or {})})


async def test_batch_sends_each_message_on_its_own(relay) -> None:
    t = await relay.tenant(credits=20)
    batch = [body_for(t, to=f"r{i}@dest.test", subject=f"n{i}") for i in range(5)]
    batch[1]["to"] = ["a@dest.test", "b@dest.test"]  # two recipients: two credits
    async with serve_api(relay) as api:
        r = await post_batch(api, t.key, batch)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["ok"] is True and [e["statusCode"] for e in doc["results"]] == [200] * 5
        assert [e["index"] for e in doc["results"]] == list(range(5))
        ids = [e["messageId"] for e in doc["results"]]
        assert len(set(ids)) == 5 and all(e["status"] == "sent" for e in doc["results"])
    assert sorted(m.recipients[0] for m in relay.peer.messages) == sorted(
        ["r0@dest.test", "a@dest.test", "r2@dest.test", "r3@dest.test", "r4@dest.test"])
    assert await relay.balance(t) == 20 - 6


async def test_batch_messages_keep_their_tags_metadata_and_schedule(relay) -> None:
    t = await relay.tenant(credits=20)
    when = (datetime.now(UTC) + timedelta(hours=5)).replace(microsecond=0)
    batch = [body_for(t, to=f"r{i}@dest.test", tags=[{"name": "n", "value": str(i)}], metadata={"i": i})
             for i in range(6)]
    batch[5]["send_at"] = when.isoformat()
    async with serve_api(relay) as api:
        r = await post_batch(api, t.key, batch)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [e["statusCode"] for e in results] == [200] * 5 + [202]
        assert results[5]["status"] == "scheduled"
        for i, entry in enumerate(results):
            row = (await api.get(f"/v1/messages/{entry['messageId']}", t.key)).json()
            assert row["tags"] == [{"name": "n", "value": str(i)}] and row["metadata"] == {"i": i}
            assert row["scheduledAt"] == (when.isoformat() if i == 5 else None)
    assert len(relay.peer.messages) == 5 and await relay.balance(t) == 14
    # the admits shared statements: fewer round trips than messages
    assert relay.store.admitter.round_trips < 6


async def test_batch_with_invalid_messages_refuses_only_those(relay) -> None:
    t = await relay.tenant(credits=20)
    batch: list[Any] = [
        body_for(t, to="ok1@dest.test"),
        body_for(t, to="not an address"),
        body_for(t, to="ok2@dest.test", attachments=[{"filename": "x.pdf", "content": "%%%"}]),
        "not an object",
        body_for(t, **{"from": "intruder@elsewhere.test"}),
        body_for(t, to="ok3@dest.test"),
    ]
    async with serve_api(relay) as api:
        r = await post_batch(api, t.key, batch)
        assert r.status_code == 207, r.text
        results = r.json()["results"]
    assert [e["statusCode"] for e in results] == [200, 400, 400, 400, 400, 200]
    assert results[2]["error"] == "batch[2]: attachments[0] ('x.pdf'): 'content' is not valid base64"
    assert results[3]["error"] == "batch[3] must be a JSON object"
    assert all(e["code"] == "INVALID" and "messageId" not in e for e in results[1:5])
    assert sorted(m.recipients[0] for m in relay.peer.messages) == ["ok1@dest.test", "ok3@dest.test"]
    assert await relay.balance(t) == 18  # exactly the two that left


async def test_batch_credits_run_out_midway(relay) -> None:
    t = await relay.tenant(credits=3)
    batch = [body_for(t, to=f"r{i}@dest.test") for i in range(5)]
    async with serve_api(relay) as api:
        r = await post_batch(api, t.key, batch)
        assert r.status_code == 207, r.text
        codes = [e["statusCode"] for e in r.json()["results"]]
    assert sorted(codes) == [200, 200, 200, 402, 402]
    assert len(relay.peer.messages) == 3 and await relay.balance(t) == 0


async def test_batch_refused_whole(relay) -> None:
    t = await relay.tenant(credits=500)
    async with serve_api(relay) as api:
        assert_failure(await post_batch(api, t.key, []), 400, "INVALID",
                       "a batch is a JSON array of 1-100 send requests")
        assert_failure(await post_batch(api, t.key, {"messages": []}), 400, "INVALID",
                       "a batch is a JSON array of 1-100 send requests")
        assert_failure(await post_batch(api, t.key, [body_for(t)] * 101), 400, "INVALID",
                       "a batch holds at most 100 messages")
        assert_failure(await post_batch(api, "rk_nope_nope", [body_for(t)]), 401, "KEY_INVALID")
        r = await api.client.post("/v1/send/batch", content=b"[{", headers={"Authorization": f"Bearer {t.key}"})
        assert_failure(r, 400, "INVALID")
    await assert_untouched(relay, t, 500)


async def test_batch_idempotency_key_covers_the_batch(relay) -> None:
    t = await relay.tenant(credits=20)
    batch = [body_for(t, to=f"r{i}@dest.test") for i in range(3)]
    key = {"Idempotency-Key": "batch-7"}
    async with serve_api(relay) as api:
        first = await post_batch(api, t.key, batch, key)
        assert first.status_code == 200, first.text
        again = await post_batch(api, t.key, batch, key)
        assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
        assert [e["messageId"] for e in again.json()["results"]] == [e["messageId"] for e in first.json()["results"]]
        other = await post_batch(api, t.key, [*batch, body_for(t, to="extra@dest.test")], key)
        assert_failure(other, 409, "IDEMPOTENCY_MISMATCH")
    assert len(relay.peer.messages) == 3 and await relay.balance(t) == 17


# -- scheduled sends ------------------------------------------------------------------------------


def worker(relay, clock) -> QueueWorker:
    upstream = SmtpUpstream(relay.peer.url, timeout=2, pool_size=2)
    return QueueWorker(relay.store, upstream, LimitsConfig(), FAST, clock)


async def test_scheduled_send_is_delivered_at_its_time(relay) -> None:
    t = await relay.tenant(credits=10, daily_cap=1)
    when = (datetime.now(UTC) + timedelta(hours=30)).replace(microsecond=0)
    async with serve_api(relay) as api:
        r = await api.send(t.key, body_for(t, send_at=when.isoformat().replace("+00:00", "Z"),
                                           tags=[{"name": "kind", "value": "reminder"}]))
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "scheduled"
        mid = r.json()["messageId"]
        row = (await api.get(f"/v1/messages/{mid}", t.key)).json()
        assert row["status"] == "scheduled" and row["scheduledAt"] == when.isoformat()
        # a scheduled message does not use the sender's daily cap (1): this one still goes out now
        assert (await api.send(t.key, body_for(t))).status_code == 200
    assert await relay.balance(t) == 8  # charged at once
    w = worker(relay, lambda: when - timedelta(seconds=1))
    assert (await w.deliver_due()).handled == 0
    assert len(relay.peer.messages) == 1
    # the operator's release of capped mail does not release scheduled mail
    assert await relay.store.release(datetime.now(UTC)) == 0
    w.clock = lambda: when + timedelta(seconds=1)  # 30 hours later: past the 24 h of a capped message
    assert (await w.deliver_due()).sent == 1
    await w.upstream.close()
    assert len(relay.peer.messages) == 2 and relay.peer.messages[1].recipients == ["rcpt@dest.test"]
    async with serve_api(relay) as api:
        row = (await api.get(f"/v1/messages/{mid}", t.key)).json()
    assert row["status"] == "sent" and row["creditsRefunded"] == 0
    assert await relay.balance(t) == 8


async def test_scheduled_send_cancelled_is_refunded(relay) -> None:
    t = await relay.tenant(credits=10)
    when = datetime.now(UTC) + timedelta(hours=2)
    async with serve_api(relay) as api:
        r = await api.send(t.key, body_for(t, to=["a@dest.test", "b@dest.test"], send_at=when.isoformat()))
        assert r.status_code == 202, r.text
        mid = r.json()["messageId"]
        assert await relay.balance(t) == 8
        other = await relay.tenant(credits=10, sender="app@other.test")
        assert_failure(await api.client.delete(f"/v1/messages/{mid}", headers={
            "Authorization": f"Bearer {other.key}"}), 404, "NOT_FOUND")
        gone = await api.client.delete(f"/v1/messages/{mid}", headers={"Authorization": f"Bearer {t.key}"})
        assert gone.status_code == 200 and gone.json() == {"ok": True, "messageId": mid, "status": "cancelled"}
        assert await relay.balance(t) == 10
        again = await api.client.delete(f"/v1/messages/{mid}", headers={"Authorization": f"Bearer {t.key}"})
        assert_failure(again, 409, "NOT_CANCELLABLE",
                       "only a scheduled message can be cancelled; this one is cancelled")
        row = (await api.get(f"/v1/messages/{mid}", t.key)).json()
        assert row["status"] == "cancelled" and row["creditsRefunded"] == 2
        sent = await api.send(t.key, body_for(t))
        assert_failure(await api.client.delete(f"/v1/messages/{sent.json()['messageId']}", headers={
            "Authorization": f"Bearer {t.key}"}), 409, "NOT_CANCELLABLE")
        assert_failure(await api.client.delete(f"/v1/messages/{uuid.uuid4()}", headers={
            "Authorization": f"Bearer {t.key}"}), 404, "NOT_FOUND")
    w = worker(relay, lambda: when + timedelta(minutes=1))
    assert (await w.deliver_due()).handled == 0  # nothing left to deliver
    await w.upstream.close()
    assert len(relay.peer.messages) == 1 and await relay.balance(t) == 9


async def test_scheduled_send_fails_permanently_and_is_refunded(relay) -> None:
    t = await relay.tenant(credits=10)
    when = datetime.now(UTC) + timedelta(minutes=10)
    async with serve_api(relay) as api:
        r = await api.send(t.key, body_for(t, send_at=when.isoformat()))
        assert r.status_code == 202
    relay.peer.handler.rcpt_replies["rcpt@dest.test"] = "550 5.1.1 no such user"
    w = worker(relay, lambda: when + timedelta(seconds=5))
    assert (await w.deliver_due()).failed == 1
    await w.upstream.close()
    assert await relay.balance(t) == 10


# -- SMTP: X-Relay-Tags / X-Relay-Metadata ----------------------------------------------------------


async def test_smtp_tags_and_metadata_headers_are_stored_and_removed(relay) -> None:
    t = await relay.tenant(credits=10)
    data = (f"From: {t.sender}\r\nTo: rcpt@dest.test\r\nSubject: tagged\r\n"
            "X-Relay-Tags: category=invoice,\r\n tenant=a-7\r\n"
            'X-Relay-Metadata: {"order": 99}\r\n\r\nbody\r\n').encode()
    reply = await send(relay.port, t.key, t.sender, ["rcpt@dest.test"], data)
    assert reply.code == 250, reply
    mid = uuid.UUID(reply.message.removeprefix("OK: "))
    row = await relay.store.message(mid)
    assert json.loads(row["tags"]) == {"category": "invoice", "tenant": "a-7"}
    assert json.loads(row["metadata"]) == {"order": 99}
    [got] = relay.peer.messages
    assert b"X-Relay" not in got.data and b"Subject: tagged" in got.data
    assert [r["id"] for r in await relay.store.logs(tags={"tenant": "a-7"})] == [mid]


@pytest.mark.parametrize("header", [
    "X-Relay-Tags: no value here", "X-Relay-Tags: a=b c", "X-Relay-Metadata: [1, 2]",
    "X-Relay-Metadata: {broken", "X-Relay-Tags: a=1\r\nX-Relay-Tags: b=2",
])
async def test_smtp_bad_tag_headers_are_refused(relay, header: str) -> None:
    t = await relay.tenant(credits=10)
    data = f"From: {t.sender}\r\nTo: rcpt@dest.test\r\n{header}\r\n\r\nbody\r\n".encode()
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send(relay.port, t.key, t.sender, ["rcpt@dest.test"], data)
    assert refused.value.code == 550
    await assert_untouched(relay, t, 10)


async def test_cli_logs_filters_by_tag(relay, db_dsn) -> None:
    from tests.test_cli import run

    t = await relay.tenant(credits=10)
    async with serve_api(relay) as api:
        tagged = await api.send(t.key, body_for(t, tags=[{"name": "kind", "value": "invoice"},
                                                         {"name": "shop", "value": "eu"}]))
        await api.send(t.key, body_for(t, tags=[{"name": "kind", "value": "receipt"}]))
        await api.send(t.key, body_for(t))
    code, out, _ = await run(db_dsn, "logs", "--tag", "kind=invoice", "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [tagged.json()["messageId"]]
    code, out, _ = await run(db_dsn, "logs", "--tag", "kind=invoice", "--tag", "shop=us", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = await run(db_dsn, "logs", "--tag", "kind=invoice")
    assert code == 0 and 'tags={"kind": "invoice", "shop": "eu"}' in out
    code, _, err = await run(db_dsn, "logs", "--tag", "kind")
    assert code == 2 and "a tag is NAME=VALUE" in err


@pytest.mark.parametrize("size", [0, 1, 56, 57, 58, 57 * 2048 - 1, 57 * 2048, 57 * 2048 + 1, 300_001])
def test_base64_lines_match_the_standard_library(size: int) -> None:
    from relay.mime import _wrapped_base64

    data = os.urandom(size)
    expected = base64.encodebytes(data).replace(b"\n", b"\r\n").removesuffix(b"\r\n")
    assert bytes(_wrapped_base64(data)) == expected


async def test_scheduled_send_replayed_under_its_idempotency_key(relay) -> None:
    t = await relay.tenant(credits=10)
    body = body_for(t, send_at=(datetime.now(UTC) + timedelta(hours=3)).isoformat())
    async with serve_api(relay) as api:
        first = await api.send(t.key, body, headers={"Idempotency-Key": "sched-1"})
        again = await api.send(t.key, body, headers={"Idempotency-Key": "sched-1"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and first.json()["status"] == "scheduled"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await relay.balance(t) == 9 and relay.peer.messages == []


async def test_scheduled_send_retried_by_the_queue_rules(relay) -> None:
    t = await relay.tenant(credits=10)
    when = datetime.now(UTC) + timedelta(hours=40)
    async with serve_api(relay) as api:
        mid = (await api.send(t.key, body_for(t, send_at=when.isoformat()))).json()["messageId"]
    now = [when + timedelta(seconds=1)]
    w = worker(relay, lambda: now[0])
    relay.peer.handler.mail_reply = "451 4.7.1 Greylisted, try again later"
    assert (await w.deliver_due()).retried == 1
    row = await relay.store.message(uuid.UUID(mid))
    assert row["status"] == "queued" and row["attempts"] == 1
    assert row["deliver_after"] == now[0] + timedelta(seconds=FAST.retry_base_seconds)
    relay.peer.handler.mail_reply = None
    now[0] += timedelta(seconds=FAST.retry_base_seconds)
    assert (await w.deliver_due()).sent == 1  # 40 h after acceptance: within 24 h of its send_at
    await w.upstream.close()
    assert len(relay.peer.messages) == 1 and await relay.balance(t) == 9


async def test_a_scheduled_messages_queued_event_says_when_it_is_due(relay) -> None:
    t = await relay.tenant(credits=10)
    send_at = (datetime.now(UTC) + timedelta(hours=50)).replace(microsecond=0)
    async with serve_api(relay) as api:
        r = await api.send(t.key, body_for(t, send_at=send_at.isoformat()))
        assert r.status_code == 202, r.text
        row = (await api.get(f"/v1/messages/{r.json()['messageId']}", t.key)).json()
    [event] = row["events"]
    assert event["type"] == "email.queued"
    assert datetime.fromisoformat(event["data"]["deliverAfter"]) == send_at


async def test_tags_and_metadata_travel_in_events(relay) -> None:
    from relay.events.payload import webhook_body

    t = await relay.tenant(credits=10)
    tags = [{"name": "kind", "value": "invoice"}]
    metadata = {"order": 7, "note": None}
    async with serve_api(relay) as api:
        sent = await api.send(t.key, body_for(t, tags=tags, metadata=metadata))
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        scheduled = await api.send(t.key, body_for(t, tags=tags, metadata=metadata, send_at=later))
        plain = await api.send(t.key, body_for(t))
        rows = [(await api.get(f"/v1/messages/{r.json()['messageId']}", t.key)).json()
                for r in (sent, scheduled, plain)]
    sent_events, scheduled_events, plain_events = (row["events"] for row in rows)
    assert [e["type"] for e in sent_events] == ["email.sent"]
    assert scheduled_events and all(e["type"] == "email.queued" for e in scheduled_events)
    for event in (*sent_events, *scheduled_events):  # written in admit, before the tags: updated with them
        assert event["data"]["tags"] == {"kind": "invoice"} and event["data"]["metadata"] == metadata
    assert plain_events and all("tags" not in e["data"] and "metadata" not in e["data"] for e in plain_events)
    [event] = await relay.store.events(uuid.UUID(sent.json()["messageId"]))
    body = json.loads(webhook_body(event))  # what a webhook endpoint receives
    assert body["data"]["tags"] == {"kind": "invoice"} and body["data"]["metadata"] == metadata


async def test_batch_refusals_send_and_charge_nothing(relay, pg) -> None:
    """Refused before any message is admitted (429, 400 for the batch's key, 503): nothing leaves,
    no credit moves."""
    from tests.conftest import database_unreachable

    limited, t = await relay.tenant(credits=10, rate=1), await relay.tenant(credits=10)
    async with serve_api(relay) as api:
        async def batch(tenant: Any, **headers: str) -> Any:
            return await api.client.post("/v1/send/batch", content=json.dumps([body_for(tenant)]).encode(),
                                         headers={"Authorization": f"Bearer {tenant.key}", **headers})

        assert_failure(await api.client.post("/v1/send/batch", content=b"[]",
                                             headers={"Authorization": f"Bearer {limited.key}"}), 400, "INVALID")
        assert_failure(await batch(limited), 429, "RATE_LIMITED")  # the call above was the minute's one
        assert_failure(await batch(t, **{"Idempotency-Key": "k" * 300}), 400, "INVALID")
        async with database_unreachable(relay, pg.admin_dsn):
            assert_failure(await batch(t), 503, "TEMPORARY")
    await assert_untouched(relay, limited, 10)
    await assert_untouched(relay, t, 10)
    assert await relay.store.logs() == []
