"""HTTPS API end to end: every row of SPEC.md's HTTPS table through a real server and a real client.

Each rejection proves nothing was relayed and no credit moved; each failure after the debit proves
the refund.
"""

from __future__ import annotations

import asyncio
import email
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from email import policy

import httpx
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from relay.channels.http import HTTP_REPLIES, HttpServer, body_limit, build_app, http_reply
from relay.outcomes import Outcome, Result
from tests.conftest import (
    assert_untouched,
    database_unreachable,
    eventually,
    lose_the_debit_race,
    relay_config,
    start_relay,
)
from tests.http_helpers import Api, assert_failure, body_for, raw_http, serve_api

SMALL = 5000  # limits.max_message_bytes for the size tests


@pytest.fixture
async def api(relay) -> AsyncIterator[Api]:
    async with serve_api(relay) as live_api:
        yield live_api


@pytest.fixture
async def small_api(db_dsn, store, peer) -> AsyncIterator[Api]:
    live = await start_relay(relay_config(db_dsn, peer.url, limits={"max_message_bytes": SMALL}), store, peer)
    try:
        async with serve_api(live) as live_api:
            yield live_api
    finally:
        await live.server.stop(grace=1)


def parsed(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


# -- SENT ------------------------------------------------------------------------------------------


async def test_sent_is_200_with_the_exact_envelope_and_no_bcc_header(api: Api) -> None:
    t = await api.relay.tenant(credits=10)
    body = body_for(
        t, **{"from": f"App Team <{t.sender}>"}, to=["one@dest.test", "Two Person <two@dest.test>"],
        cc="copy@dest.test", bcc=["hidden@dest.test"], reply_to="support@example.com",
        subject="Your receipt", text="plain body", html="<p>html body</p>",
        headers={"X-Campaign": "welcome", "List-Unsubscribe": "<https://example.com/u?" + "a" * 300 + ">"},
    )
    response = await api.send(t.key, body)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc == {"ok": True, "messageId": doc["messageId"], "status": "sent"}
    uuid.UUID(doc["messageId"])

    [got] = api.relay.peer.messages
    assert got.mail_from == t.sender
    assert got.recipients == ["one@dest.test", "two@dest.test", "copy@dest.test", "hidden@dest.test"]
    assert b"hidden@dest.test" not in got.data  # Bcc only in the envelope
    assert got.data.count(b"\n") == got.data.count(b"\r\n")  # CRLF throughout
    message = parsed(got.data)
    assert "Bcc" not in message
    assert message["From"].addresses[0].addr_spec == t.sender
    assert message["From"].addresses[0].display_name == "App Team"
    assert [a.addr_spec for a in message["To"].addresses] == ["one@dest.test", "two@dest.test"]
    assert str(message["Cc"]) == "copy@dest.test"
    assert str(message["Reply-To"]) == "support@example.com"
    assert str(message["Subject"]) == "Your receipt"
    assert message["X-Campaign"] == "welcome"
    assert message["List-Unsubscribe"] == body["headers"]["List-Unsubscribe"]  # never refolded
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith("@relay.test>")
    assert message["Date"].datetime is not None
    assert message["Received"].startswith("from unknown ([127.0.0.1]) by relay.test with HTTP id ")
    assert message.get_content_type() == "multipart/alternative"
    parts = [(p.get_content_type(), p.get_content().strip()) for p in message.iter_parts()]
    assert parts == [("text/plain", "plain body"), ("text/html", "<p>html body</p>")]

    assert await api.relay.balance(t) == 6  # four recipients
    [row] = await api.relay.store.logs()
    assert (row["status"], row["channel"], row["credits_charged"], str(row["id"])) == (
        "sent", "api", 4, doc["messageId"])


@pytest.mark.parametrize(("fields", "content_type"), [
    ({"text": "only text", "html": None}, "text/plain"),
    ({"html": "<b>only html</b>", "text": None}, "text/html"),
])
async def test_single_part_bodies(api: Api, fields, content_type) -> None:
    t = await api.relay.tenant()
    response = await api.send(t.key, body_for(t, **fields))
    assert response.status_code == 200, response.text
    message = parsed(api.relay.peer.messages[0].data)
    assert message.get_content_type() == content_type
    assert not message.is_multipart()


async def test_non_ascii_is_encoded_for_any_upstream(api: Api) -> None:
    t = await api.relay.tenant()
    response = await api.send(t.key, body_for(
        t, **{"from": f"Zoë Café <{t.sender}>"}, subject="Grüße ✓", text="naïve text ✓",
        headers={"X-Note": "über"}))
    assert response.status_code == 200, response.text
    data = api.relay.peer.messages[0].data
    assert data.isascii()  # 7bit-clean: RFC 2047 headers, quoted-printable/base64 body
    message = parsed(data)
    assert str(message["Subject"]) == "Grüße ✓" and message["X-Note"] == "über"
    assert message["From"].addresses[0].display_name == "Zoë Café"
    assert message.get_content().strip() == "naïve text ✓"


async def test_a_large_message_arrives_intact(api: Api) -> None:
    t = await api.relay.tenant()
    html = "<p>grüße, welt</p>\n" * 60_000  # over 1 MB: decoded and composed off the event loop
    text = "line\n" * 50_000
    response = await api.send(t.key, body_for(t, html=html, text=text))
    assert response.status_code == 200, response.text
    message = parsed(api.relay.peer.messages[0].data)
    plain, rich = message.iter_parts()
    # line ends travel as CRLF
    assert (plain.get_content().replace("\r\n", "\n"), rich.get_content().replace("\r\n", "\n")) == (text, html)
    [row] = await api.relay.store.logs()
    assert row["size_bytes"] == len(html.encode()) + len(text.encode())


async def test_bearer_scheme_is_case_insensitive(api: Api) -> None:
    t = await api.relay.tenant()
    response = await api.client.post("/v1/send", json=body_for(t), headers={"Authorization": f"bearer {t.key}"})
    assert response.status_code == 200, response.text


# -- QUEUED ----------------------------------------------------------------------------------------


async def test_over_the_daily_cap_is_202_queued_and_charged(api: Api) -> None:
    t = await api.relay.tenant(credits=10, daily_cap=1)
    first = await api.send(t.key, body_for(t))
    assert first.status_code == 200 and first.json()["status"] == "sent"
    second = await api.send(t.key, body_for(t))
    assert second.status_code == 202, second.text
    doc = second.json()
    assert doc == {"ok": True, "messageId": doc["messageId"], "status": "queued"}
    assert len(api.relay.peer.messages) == 1
    assert await api.relay.balance(t) == 8
    queued = await api.relay.store.queued()
    assert [str(r["id"]) for r in queued] == [doc["messageId"]]


# -- INVALID ---------------------------------------------------------------------------------------

RAW_INVALID = [
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"text"', "must be a JSON object"),
    (b'{"from": "\xff"}', "UTF-8"),
    (b"[" * 100_000, "not valid JSON"),
    (b'{"from": "app@example.com", "to": "a@dest.test", "to": "b@dest.test", "text": "x"}',
     "'to' is given more than once"),
    (b'{"from": "app@example.com", "to": "a@dest.test", "text": "\\ud800"}', "'text' is not valid Unicode"),
]

FIELD_INVALID = [
    ({"bogus": 1}, "unknown field 'bogus'"),
    ({"replyTo": "a@dest.test"}, "unknown field 'replyTo'"),
    ({"from": None}, "field 'from' is required"),
    ({"from": 5}, "field 'from' must be a string"),
    ({"from": "not an address"}, "field 'from': 'not an address' is not a valid email address"),
    ({"from": "app@example.com\r\nBcc: x@evil.test"}, "field 'from' must not contain CR, LF"),
    ({"to": None}, "field 'to' is required"),
    ({"to": []}, "field 'to' needs at least one recipient"),
    ({"to": 5}, "field 'to' must be a string or a list of strings"),
    ({"to": ["ok@dest.test", 7]}, "to[1] must be a string"),
    ({"to": "a@b"}, "field 'to': 'a@b' is not a valid email address"),
    ({"to": "a@dest.test\nb@dest.test"}, "must not contain CR, LF"),
    ({"cc": {"a": 1}}, "field 'cc' must be a string or a list of strings"),
    ({"bcc": ["no-domain"]}, "bcc[0]: 'no-domain' is not a valid email address"),
    ({"reply_to": "nope"}, "field 'reply_to': 'nope' is not a valid email address"),
    ({"subject": 5}, "field 'subject' must be a string"),
    ({"subject": "hi\r\nBcc: x@evil.test"}, "field 'subject' must not contain CR, LF"),
    ({"subject": "hi\u2028there"}, "field 'subject' must not contain CR, LF"),
    ({"html": []}, "field 'html' must be a string"),
    ({"text": {"a": 1}}, "field 'text' must be a string"),
    ({"text": None}, "no body"),
    ({"text": "", "html": ""}, "no body"),
    ({"headers": []}, "field 'headers' must be an object"),
    ({"headers": {"X-A": 1}}, "headers['X-A'] must be a string"),
    ({"headers": {"X-A": "a\r\nBcc: x@evil.test"}}, "headers['X-A'] must not contain CR, LF"),
    ({"headers": {"X-A": "a\nb"}}, "headers['X-A'] must not contain CR, LF"),
    ({"headers": {"X A": "v"}}, "'X A' is not a valid header name"),
    ({"headers": {"X-A\r\nBcc": "v"}}, "is not a valid header name"),
    ({"headers": {"From": "ceo@example.com"}}, "'From' cannot be set through 'headers'"),
    ({"headers": {"bcc": "x@evil.test"}}, "'bcc' cannot be set through 'headers'"),
    ({"headers": {"To": "x@evil.test"}}, "'To' cannot be set"),
    ({"headers": {"Cc": "x@evil.test"}}, "'Cc' cannot be set"),
    ({"headers": {"Date": "Mon, 1 Jan 2024 00:00:00 +0000"}}, "'Date' cannot be set"),
    ({"headers": {"Message-ID": "<x@y.test>"}}, "'Message-ID' cannot be set"),
    ({"headers": {"Content-Type": "text/plain"}}, "'Content-Type' cannot be set"),
    ({"headers": {"Sender": "x@evil.test"}}, "'Sender' cannot be set"),
    ({"headers": {"X-Long": "v" * 901}}, "headers['X-Long'] is longer than 900 characters"),
    ({"headers": {"Idempotency-Key": "k1"}}, "'Idempotency-Key' cannot be set through 'headers'; send it as an HTTP"),
    ({"to": "a@dest.test", "bcc": "A@Dest.Test"}, "recipient A@Dest.Test appears more than once"),
    ({"to": [f"r{i}@dest.test" for i in range(60)], "cc": [f"c{i}@dest.test" for i in range(41)]},
     "more than 100 recipients"),
    ({"to": [f"r{i}@dest.test" for i in range(101)]}, "more than 100 recipients"),
    ({"from": "someone@elsewhere.test"}, "sender someone@elsewhere.test is not authorized"),
    ({"from": "Boss <boss@elsewhere.test>"}, "sender boss@elsewhere.test is not authorized"),
]


@pytest.mark.parametrize(("content", "expected"), RAW_INVALID, ids=[e for _, e in RAW_INVALID])
async def test_malformed_body_is_400_invalid(api: Api, content: bytes, expected: str) -> None:
    t = await api.relay.tenant()
    doc = assert_failure(await api.send(t.key, content=content), 400, "INVALID")
    assert expected in doc["error"], doc
    await assert_untouched(api.relay, t, 100)
    assert await api.relay.store.logs() == []


@pytest.mark.parametrize(("fields", "expected"), FIELD_INVALID, ids=[e for _, e in FIELD_INVALID])
async def test_invalid_field_is_400_naming_it(api: Api, fields: dict, expected: str) -> None:
    t = await api.relay.tenant(credits=1000)
    doc = assert_failure(await api.send(t.key, body_for(t, **fields)), 400, "INVALID")
    assert expected in doc["error"], doc
    await assert_untouched(api.relay, t, 1000)
    assert await api.relay.store.logs() == []


async def test_validation_comes_before_the_balance_check(api: Api) -> None:
    t = await api.relay.tenant(credits=0)
    assert_failure(await api.send(t.key, body_for(t, to="bad")), 400, "INVALID")
    assert_failure(await api.send(t.key, body_for(t)), 402, "INSUFFICIENT_CREDITS")
    await assert_untouched(api.relay, t, 0)


# -- keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Basic YXBwOmtleQ==", "Bearer", "Token abc", ""])
async def test_missing_bearer_token_is_401(api: Api, authorization: str | None) -> None:
    t = await api.relay.tenant()
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = await api.send(None, body_for(t), headers=headers)
    assert_failure(response, 401, "KEY_MISSING", "Missing Authorization bearer token")
    await assert_untouched(api.relay, t, 100)


async def test_invalid_key_is_401(api: Api) -> None:
    t = await api.relay.tenant()
    for bad in ("rk_000000000000_nope", t.key + "x", "not-a-key", "rk_" + t.key_id + "_"):
        assert_failure(await api.send(bad, body_for(t)), 401, "KEY_INVALID", "Invalid API key")
    await assert_untouched(api.relay, t, 100)


async def test_disabled_key_is_403(api: Api) -> None:
    t = await api.relay.tenant()
    await api.relay.store.set_key_enabled(t.key_id, False)
    assert_failure(await api.send(t.key, body_for(t)), 403, "KEY_DISABLED",
                   "This API key is disabled. Re-enable or rotate it.")
    await assert_untouched(api.relay, t, 100)


# -- credits ---------------------------------------------------------------------------------------


async def test_insufficient_credits_is_402_at_preflight_and_at_admit(api: Api) -> None:
    broke = await api.relay.tenant(credits=0)
    doc = assert_failure(await api.send(broke.key, body_for(broke)), 402, "INSUFFICIENT_CREDITS")
    assert "insufficient credits" in doc["error"]
    await assert_untouched(api.relay, broke, 0)
    short = await api.relay.tenant(credits=1)  # passes the pre-flight, not the cost of two
    doc = assert_failure(await api.send(short.key, body_for(short, to=["a@dest.test", "b@dest.test"])),
                         402, "INSUFFICIENT_CREDITS")
    assert "2 needed" in doc["error"]
    await assert_untouched(api.relay, short, 1)
    assert await api.relay.store.logs() == []


async def test_losing_the_debit_race_is_402_insufficient_funds(api: Api) -> None:
    t = await api.relay.tenant(credits=1)
    response = await lose_the_debit_race(api.relay, t, lambda: api.send(t.key, body_for(t)))
    assert_failure(response, 402, "INSUFFICIENT_FUNDS")
    await assert_untouched(api.relay, t, 0)
    assert await api.relay.store.logs() == []


async def test_fifty_concurrent_sends_over_twenty_credits(api: Api) -> None:
    t = await api.relay.tenant(credits=20)
    responses = await asyncio.gather(*(api.send(t.key, body_for(t, to=f"r{i}@dest.test")) for i in range(50)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 20 + [402] * 30
    for r in responses:
        if r.status_code == 402:
            assert r.json()["code"] in ("INSUFFICIENT_CREDITS", "INSUFFICIENT_FUNDS")
    assert len(api.relay.peer.messages) == 20
    assert await api.relay.balance(t) == 0
    assert len(await api.relay.store.logs(status="sent")) == 20


# -- size ------------------------------------------------------------------------------------------


async def test_html_plus_text_over_the_limit_is_413_counted_in_bytes(small_api: Api) -> None:
    t = await small_api.relay.tenant()
    limit_text = f"Body must be under {SMALL} bytes"
    # 2-byte characters: the limit counts UTF-8 bytes, not characters
    assert_failure(await small_api.send(t.key, body_for(t, text=None, html="é" * (SMALL // 2 + 1))),
                   413, "TOO_LARGE", limit_text)
    assert_failure(await small_api.send(t.key, body_for(t, html="h" * 3000, text="t" * (SMALL - 2999))),
                   413, "TOO_LARGE", limit_text)
    await assert_untouched(small_api.relay, t, 100)
    exact = await small_api.send(t.key, body_for(t, html="h" * 3000, text="é" * ((SMALL - 3000) // 2)))
    assert exact.status_code == 200, exact.text


async def test_declared_content_length_over_the_limit_is_413_before_any_body(small_api: Api) -> None:
    t = await small_api.relay.tenant()
    over = body_limit(SMALL) + 1
    # no body follows the headers: a server that waited for it would time out instead
    status, headers, payload = await raw_http(small_api.port, (
        "POST /v1/send HTTP/1.1\nHost: relay.test\nContent-Type: application/json\n"
        f"Authorization: Bearer {t.key}\nContent-Length: {over}\n"))
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(payload) == {"ok": False, "error": f"Body must be under {SMALL} bytes", "code": "TOO_LARGE"}
    await assert_untouched(small_api.relay, t, 100)


async def test_chunked_body_over_the_limit_is_413_while_streaming(small_api: Api) -> None:
    t = await small_api.relay.tenant()
    over = body_limit(SMALL) + 1
    # one chunk past the limit and no terminating chunk: the answer cannot wait for the end
    status, headers, payload = await raw_http(
        small_api.port,
        "POST /v1/send HTTP/1.1\nHost: relay.test\nContent-Type: application/json\n"
        f"Authorization: Bearer {t.key}\nTransfer-Encoding: chunked\n",
        f"{over:x}\r\n".encode() + b"x" * over + b"\r\n")
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(payload)["code"] == "TOO_LARGE"
    await assert_untouched(small_api.relay, t, 100)


async def test_a_body_at_the_limit_is_read(small_api: Api) -> None:
    t = await small_api.relay.tenant()
    padding = body_limit(SMALL) - len(json.dumps(body_for(t, bogus="")).encode())
    response = await small_api.send(t.key, body_for(t, bogus="p" * padding))
    assert int(response.request.headers["content-length"]) == body_limit(SMALL)
    assert "unknown field 'bogus'" in assert_failure(response, 400, "INVALID")["error"]


async def test_the_key_is_checked_before_the_body_is_read(small_api: Api) -> None:
    status, headers, payload = await raw_http(small_api.port, (
        "POST /v1/send HTTP/1.1\nHost: relay.test\nContent-Length: 999999999\n"))
    assert status == 401 and headers["connection"] == "close"
    assert json.loads(payload)["code"] == "KEY_MISSING"


# -- rate limit ------------------------------------------------------------------------------------


async def test_rate_limited_is_429_with_retry_after(api: Api) -> None:
    t = await api.relay.tenant(rate=2)
    for _ in range(2):
        assert (await api.send(t.key, body_for(t))).status_code == 200
    response = await api.send(t.key, body_for(t))
    doc = assert_failure(response, 429, "RATE_LIMITED")
    assert "rate limit" in doc["error"]
    assert 1 <= int(response.headers["retry-after"]) <= 61  # one-second buckets: a call counts up to 61 s
    # the limit outranks what the body says
    assert_failure(await api.send(t.key, body_for(t, to="bad")), 429, "RATE_LIMITED")
    assert len(api.relay.peer.messages) == 2
    assert await api.relay.balance(t) == 98


# -- upstream --------------------------------------------------------------------------------------


async def test_upstream_permanent_refusal_is_502_and_refunded(api: Api) -> None:
    t = await api.relay.tenant(credits=10)
    api.relay.peer.handler.data_reply = "550 5.1.1 User unknown"
    doc = assert_failure(await api.send(t.key, body_for(t)), 502, "RELAY_FAILED")
    assert "User unknown" in doc["error"]
    await assert_untouched(api.relay, t, 10)
    [row] = await api.relay.store.logs()
    assert (row["status"], row["failure_code"], row["credits_charged"], row["credits_refunded"]) == (
        "failed", 2001, 1, 1)
    assert doc["messageId"] == str(row["id"])


async def test_upstream_transient_refusal_is_503_with_retry_after_and_refunded(api: Api) -> None:
    t = await api.relay.tenant(credits=10)
    api.relay.peer.handler.mail_reply = "421 4.7.0 try later"
    response = await api.send(t.key, body_for(t))
    assert_failure(response, 503, "UPSTREAM_UNAVAILABLE", "upstream unavailable, try again later")
    assert int(response.headers["retry-after"]) > 0
    await assert_untouched(api.relay, t, 10)
    [row] = await api.relay.store.logs()
    assert row["status"] == "failed" and row["credits_refunded"] == 1


async def test_every_recipient_refused_at_rcpt_is_502_and_refunded(api: Api) -> None:
    t = await api.relay.tenant(credits=10)
    api.relay.peer.handler.rcpt_replies["gone@dest.test"] = "550 5.1.1 <gone@dest.test>: User unknown"
    assert_failure(await api.send(t.key, body_for(t, to="gone@dest.test")), 502, "RELAY_FAILED")
    await assert_untouched(api.relay, t, 10)
    [row] = await api.relay.store.logs()
    assert row["failure_code"] == 2001 and row["credits_refunded"] == row["credits_charged"] == 1


async def test_one_recipient_refused_is_200_charging_only_the_accepted_one(api: Api) -> None:
    t = await api.relay.tenant(credits=10)
    api.relay.peer.handler.rcpt_replies["gone@dest.test"] = "550 5.1.1 <gone@dest.test>: User unknown"
    response = await api.send(t.key, body_for(t, to=["ok@dest.test", "gone@dest.test"]))
    assert response.status_code == 200 and response.json()["status"] == "sent"
    [got] = api.relay.peer.messages
    assert got.recipients == ["ok@dest.test"]
    assert await api.relay.balance(t) == 9
    row = await api.relay.store.message(uuid.UUID(response.json()["messageId"]))
    assert row["credits_charged"] == 2 and row["credits_refunded"] == 1


async def test_upstream_unreachable_is_503_with_retry_after_and_refunded(db_dsn, store, peer) -> None:
    await peer.stop()
    live = await start_relay(relay_config(db_dsn, peer.url), store, peer)
    try:
        async with serve_api(live) as api:
            t = await live.tenant(credits=10)
            response = await api.send(t.key, body_for(t))
            assert_failure(response, 503, "UPSTREAM_UNAVAILABLE", "upstream unavailable, try again later")
            assert int(response.headers["retry-after"]) > 0
            await assert_untouched(live, t, 10)
            [row] = await store.logs()
            assert row["failure_code"] == 4003 and row["credits_refunded"] == 1
    finally:
        await live.server.stop(grace=1)


async def test_a_bug_in_the_upstream_is_503_temporary_and_refunded_at_once(api: Api) -> None:
    from tests.test_smtp_security import ExplodingUpstream

    t = await api.relay.tenant(credits=10)
    api.relay.server.pipeline.upstream = ExplodingUpstream()
    response = await api.send(t.key, body_for(t))
    doc = assert_failure(response, 503, "TEMPORARY", "temporary failure, try again later")
    assert "secret" not in json.dumps(doc)
    await assert_untouched(api.relay, t, 10)  # refunded now, not by the recovery sweep
    [row] = await api.relay.store.logs()
    assert row["status"] == "failed" and row["credits_refunded"] == 1


# -- TEMPORARY -------------------------------------------------------------------------------------


async def test_database_unreachable_is_503_temporary_and_nothing_charged(api: Api, pg) -> None:
    t = await api.relay.tenant(credits=10)
    async with database_unreachable(api.relay, pg.admin_dsn):
        response = await api.send(t.key, body_for(t))
        ready = await api.get("/readyz")
    assert_failure(response, 503, "TEMPORARY", "temporary failure, try again later")
    assert int(response.headers["retry-after"]) > 0
    assert_failure(ready, 503, "TEMPORARY")
    assert (await api.get("/readyz")).status_code == 200
    await assert_untouched(api.relay, t, 10)


async def test_unexpected_exception_is_503_temporary_without_internals(api: Api, monkeypatch) -> None:
    t = await api.relay.tenant(credits=10)

    async def broken(*args: object) -> Result:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(api.relay.server.pipeline, "open_call", broken)
    response = await api.send(t.key, body_for(t))
    assert_failure(response, 503, "TEMPORARY", "temporary failure, try again later")
    assert "secret" not in response.text and response.headers["retry-after"] == "5"
    await assert_untouched(api.relay, t, 10)


# -- Idempotency-Key ---------------------------------------------------------------------------------


async def test_a_repeated_idempotency_key_replays_the_first_answer(api: Api) -> None:
    t = await api.relay.tenant(credits=10)
    key = {"Idempotency-Key": "order-42"}
    first = await api.send(t.key, body_for(t, to=["a@dest.test"]), headers=key)
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    # the same request spelled differently: one address as a string, keys reordered, a null field
    same = {"text": "hello there", "cc": None, "subject": "hello", "to": "a@dest.test", "from": t.sender}
    again = await api.send(t.key, same, headers=key)
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(api.relay.peer.messages) == 1 and await api.relay.balance(t) == 9

    doc = assert_failure(await api.send(t.key, body_for(t, to="b@dest.test"), headers=key), 409,
                         "IDEMPOTENCY_MISMATCH")
    assert "different message" in doc["error"]
    assert len(api.relay.peer.messages) == 1 and await api.relay.balance(t) == 9
    other = await api.send(t.key, body_for(t, to="a@dest.test"), headers={"Idempotency-Key": "order-43"})
    assert other.status_code == 200 and other.json()["messageId"] != first.json()["messageId"]
    assert await api.relay.balance(t) == 8


async def test_a_repeat_while_the_first_is_running_is_409(api: Api) -> None:
    t = await api.relay.tenant(credits=10)
    key = {"Idempotency-Key": "slow-1"}
    api.relay.peer.handler.data_delay = 1.5
    first = asyncio.create_task(api.send(t.key, body_for(t), headers=key))
    for _ in range(200):  # until the first is admitted and on its way upstream
        if await api.relay.store.logs(status="sending"):
            break
        await asyncio.sleep(0.02)
    response = await api.send(t.key, body_for(t), headers=key)
    assert_failure(response, 409, "IDEMPOTENCY_IN_FLIGHT")
    assert int(response.headers["retry-after"]) > 0
    assert (await first).status_code == 200
    assert len(api.relay.peer.messages) == 1 and await api.relay.balance(t) == 9


async def test_a_permanent_refusal_is_replayed_and_a_transient_one_can_be_retried(api: Api) -> None:
    t = await api.relay.tenant(credits=10)
    api.relay.peer.handler.data_reply = "550 5.1.1 User unknown"
    refused = assert_failure(await api.send(t.key, body_for(t), headers={"Idempotency-Key": "p"}),
                             502, "RELAY_FAILED")
    replay = await api.send(t.key, body_for(t), headers={"Idempotency-Key": "p"})
    assert assert_failure(replay, 502, "RELAY_FAILED")["messageId"] == refused["messageId"]
    assert replay.headers["idempotent-replayed"] == "true"
    api.relay.peer.handler.data_reply = None
    api.relay.peer.handler.mail_reply = "421 4.7.0 try later"
    assert_failure(await api.send(t.key, body_for(t), headers={"Idempotency-Key": "t"}), 503,
                   "UPSTREAM_UNAVAILABLE")
    api.relay.peer.handler.mail_reply = None
    retried = await api.send(t.key, body_for(t), headers={"Idempotency-Key": "t"})
    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
    assert len(api.relay.peer.messages) == 1 and await api.relay.balance(t) == 9
    assert len(await api.relay.store.logs()) == 3


async def test_queued_body_refused_is_503_refunded_and_its_key_free_for_the_retry(api: Api) -> None:
    t = await api.relay.tenant(credits=10, daily_cap=0)
    async with api.relay.store.pool.acquire() as conn:  # a real refusal from PostgreSQL, not a mock
        await conn.execute("ALTER TABLE queued_bodies ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
    key = {"Idempotency-Key": "queued-1"}
    failed = assert_failure(await api.send(t.key, body_for(t), headers=key), 503, "TEMPORARY")
    await assert_untouched(api.relay, t, 10)
    assert await api.relay.store.queued() == []
    [row] = await api.relay.store.logs()
    assert row["status"] == "failed" and row["credits_refunded"] == row["credits_charged"] == 1
    async with api.relay.store.pool.acquire() as conn:
        await conn.execute("ALTER TABLE queued_bodies DROP CONSTRAINT refuse_all")
    # the client was told "try again": the retry runs anew, not a replay of a queued answer
    retried = await api.send(t.key, body_for(t), headers=key)
    assert retried.status_code == 202 and "idempotent-replayed" not in retried.headers
    assert retried.json()["messageId"] != failed.get("messageId")
    assert [str(r["id"]) for r in await api.relay.store.queued()] == [retried.json()["messageId"]]
    assert await api.relay.balance(t) == 9


async def test_an_unusable_idempotency_key_is_400(api: Api) -> None:
    t = await api.relay.tenant()
    doc = assert_failure(await api.send(t.key, body_for(t), headers={"Idempotency-Key": "k" * 256}),
                         400, "INVALID")
    assert "Idempotency-Key" in doc["error"]
    await assert_untouched(api.relay, t, 100)


# -- GET /v1/messages/{id} -------------------------------------------------------------------------


async def test_message_lookup_shows_own_rows_only(api: Api) -> None:
    t = await api.relay.tenant(credits=10)
    stranger = await api.relay.tenant(credits=10, sender="other@example.org")
    sent = (await api.send(t.key, body_for(t))).json()["messageId"]
    api.relay.peer.handler.data_reply = "550 5.1.1 User unknown"
    failed = (await api.send(t.key, body_for(t))).json()["messageId"]

    response = await api.get(f"/v1/messages/{sent}", t.key)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["ok"] is True and doc["messageId"] == sent
    assert (doc["status"], doc["channel"], doc["creditsCharged"], doc["creditsRefunded"], doc["failureCode"]) == (
        "sent", "api", 1, 0, None)
    assert datetime.fromisoformat(doc["createdAt"]) <= datetime.fromisoformat(doc["finishedAt"])

    doc = (await api.get(f"/v1/messages/{failed}", t.key)).json()
    assert (doc["status"], doc["failureCode"], doc["creditsRefunded"]) == ("failed", 2001, 1)

    not_found = {"ok": False, "error": "no such message", "code": "NOT_FOUND"}
    for path, key in ((f"/v1/messages/{sent}", stranger.key), (f"/v1/messages/{uuid.uuid4()}", t.key),
                      ("/v1/messages/not-a-uuid", t.key)):
        response = await api.get(path, key)
        assert response.status_code == 404 and response.json() == not_found, path
    assert_failure(await api.get(f"/v1/messages/{sent}"), 401, "KEY_MISSING")
    assert_failure(await api.get(f"/v1/messages/{sent}", "rk_000000000000_nope"), 401, "KEY_INVALID")


# -- operations ------------------------------------------------------------------------------------


async def test_health_and_readiness(api: Api) -> None:
    for path in ("/healthz", "/readyz"):
        response = await api.get(path)
        assert response.status_code == 200 and response.json() == {"ok": True}, path


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def test_metrics_count_api_outcomes(api: Api) -> None:
    t = await api.relay.tenant()
    before = (await api.get("/metrics")).text
    await api.send(t.key, body_for(t))
    await api.send(t.key, content=b"{nope")
    await api.send(None, body_for(t))
    response = await api.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = response.text
    for outcome in ("SENT", "INVALID", "KEY_MISSING"):
        delta = (_sample(after, "relay_messages_total", channel="api", outcome=outcome)
                 - _sample(before, "relay_messages_total", channel="api", outcome=outcome))
        assert delta == 1, outcome
    assert (_sample(after, "relay_auth_failures_total", channel="api")
            - _sample(before, "relay_auth_failures_total", channel="api")) == 1


async def test_unknown_route_and_wrong_method_use_the_envelope(api: Api) -> None:
    assert_failure(await api.get("/nope"), 404, "NOT_FOUND", "Not Found")
    response = await api.get("/v1/send")
    assert_failure(response, 405, "METHOD_NOT_ALLOWED", "Method Not Allowed")
    assert "POST" in response.headers["allow"]
    assert_failure(await api.client.post("/healthz"), 405, "METHOD_NOT_ALLOWED")


# -- the table -------------------------------------------------------------------------------------


def test_every_outcome_has_an_http_reply() -> None:
    expected = {
        "SENT": 200, "QUEUED": 202, "INVALID": 400, "KEY_MISSING": 401, "KEY_INVALID": 401,
        "INSUFFICIENT_CREDITS": 402, "INSUFFICIENT_FUNDS": 402, "KEY_DISABLED": 403, "TOO_LARGE": 413,
        "RATE_LIMITED": 429, "RELAY_FAILED": 502, "UPSTREAM_UNAVAILABLE": 503, "TEMPORARY": 503,
        "IDEMPOTENCY_MISMATCH": 409, "IDEMPOTENCY_IN_FLIGHT": 409, "SUPPRESSED": 200,
    }
    assert set(HTTP_REPLIES) == set(Outcome)
    for outcome in Outcome:
        response = http_reply(Result(outcome, reason="why\r\n  injected"), max_message_bytes=10485760)
        assert response.status_code == expected[outcome.name], outcome
        doc = json.loads(bytes(response.body))
        if outcome.accepted:
            continue
        assert doc["code"] == outcome.name and "\n" not in doc["error"], doc
        retryable = {"RATE_LIMITED", "UPSTREAM_UNAVAILABLE", "TEMPORARY", "IDEMPOTENCY_IN_FLIGHT"}
        assert ("retry-after" in response.headers) == (outcome.name in retryable), outcome
    fixed = {Outcome.KEY_MISSING: "Missing Authorization bearer token", Outcome.KEY_INVALID: "Invalid API key",
             Outcome.KEY_DISABLED: "This API key is disabled. Re-enable or rotate it.",
             Outcome.TOO_LARGE: "Body must be under 10MB"}
    for outcome, text in fixed.items():
        response = http_reply(Result(outcome, reason="ignored"), max_message_bytes=10485760)
        assert json.loads(bytes(response.body))["error"] == text
    sent = http_reply(Result(Outcome.SENT, message_id="m1"), max_message_bytes=1)
    assert json.loads(bytes(sent.body)) == {"ok": True, "messageId": "m1", "status": "sent"}
    queued = http_reply(Result(Outcome.QUEUED, message_id="m1"), max_message_bytes=1)
    assert json.loads(bytes(queued.body)) == {"ok": True, "messageId": "m1", "status": "queued"}


# -- the server ------------------------------------------------------------------------------------


async def test_https_with_cert_and_key(relay, tmp_dir) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_dir / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_dir / "key.pem"))
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    async with serve_api(relay, certfile=str(tmp_dir / "cert.pem"), keyfile=str(tmp_dir / "key.pem"),
                         verify=client_tls) as tls_api:
        t = await relay.tenant()
        assert (await tls_api.get("/healthz")).status_code == 200
        assert (await tls_api.send(t.key, body_for(t))).status_code == 200
        assert " with HTTPS id " in parsed(relay.peer.messages[0].data)["Received"]
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"http://127.0.0.1:{tls_api.port}/healthz")


async def test_server_stops_and_refuses_a_busy_port(relay) -> None:
    app = build_app(relay.server.pipeline, hostname="relay.test", max_message_bytes=1000)
    server = HttpServer(app)
    await server.start("127.0.0.1", 0)
    port = server.port
    second = HttpServer(app)
    with pytest.raises(OSError):
        await second.start("127.0.0.1", port)
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        await server.stop(grace=1)
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/healthz")


async def test_metrics_show_queue_depth_and_upstream_pool(api: Api) -> None:
    t = await api.relay.tenant(credits=10, daily_cap=0)
    for _ in range(2):
        assert (await api.send(t.key, body_for(t))).status_code == 202
    # the server refreshes these every 15 s; one refresh is what a scrape then shows
    await api.relay.server.refresh_gauges()
    text = (await api.get("/metrics")).text
    assert _sample(text, "relay_queue_depth") == 2
    assert _sample(text, "relay_upstream_connections_in_use") == 0
    assert "relay_submit_seconds_bucket" in text


async def test_every_authenticated_request_is_a_call_whatever_its_body(api: Api) -> None:
    """SPEC: the rate limit (step 2) comes before validation (3) and size (4)."""
    t = await api.relay.tenant(rate=2)
    assert_failure(await api.send(t.key, content=b"{not json"), 400, "INVALID")
    assert_failure(await api.send(t.key, body_for(t, to="not-an-address")), 400, "INVALID")
    # two calls used: now even a malformed body is told to wait
    assert_failure(await api.send(t.key, content=b"{not json"), 429, "RATE_LIMITED")
    assert_failure(await api.send(t.key, body_for(t)), 429, "RATE_LIMITED")
    await assert_untouched(api.relay, t, 100)


async def test_client_hanging_up_mid_body_sends_and_charges_nothing(api: Api) -> None:
    """A request whose body stops short (the client went away) is not a send: nothing is admitted,
    relayed or charged, and the server goes on serving."""
    t = await api.relay.tenant(credits=5)
    body = json.dumps(body_for(t)).encode()  # whole and valid: only the missing bytes make it no send
    head = (f"POST /v1/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body) + 100}\r\n\r\n")
    _, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(head.encode() + body)
    await writer.drain()
    writer.transport.abort()
    for _ in range(25):  # a relay that took the body as it stood would have sent it by now
        assert api.relay.peer.messages == [] and not api.relay.server.pipeline.in_flight
        await asyncio.sleep(0.02)
    await assert_untouched(api.relay, t, 5)
    assert await api.relay.store.pool.fetchval(
        "SELECT count(*) FROM messages WHERE account_id = $1", t.account_id) == 0
    response = await api.send(t.key, body_for(t))
    assert response.status_code == 200 and await api.relay.balance(t) == 4


@pytest.mark.parametrize("upstream", ["accepts", "refuses"])
async def test_database_lost_after_the_debit_is_told_truthfully_and_recorded_when_it_is_back(
        api: Api, pg, upstream: str) -> None:
    """As over SMTP: the answer is the upstream's (200 it left, 502 it did not) although the
    finalize could not be written then; it is written once the database is back (issue 16), and
    the recovery sweep leaves the row alone meanwhile."""
    from relay.pipeline import recover

    relay = api.relay
    t = await relay.tenant(credits=10)
    relay.peer.handler.data_delay = 1.0
    if upstream == "refuses":
        relay.peer.handler.data_reply = "550 5.1.1 no such user"
    sending = asyncio.create_task(api.send(t.key, body_for(t)))
    await asyncio.wait_for(relay.peer.handler.mail_seen.wait(), 10)  # admitted and charged by now
    async with database_unreachable(relay, pg.admin_dsn):
        response = await sending
    if upstream == "accepts":
        assert response.status_code == 200 and len(relay.peer.messages) == 1
    else:
        assert_failure(response, 502, "RELAY_FAILED")
        assert relay.peer.messages == []
    assert await recover(relay.store, 0, relay.server.pipeline.unsettled) == 0  # never races the retry
    [row] = await relay.store.logs(account_id=t.account_id)
    expected = "sent" if upstream == "accepts" else "failed"

    async def recorded() -> bool:
        return (await relay.store.message(row["id"]))["status"] == expected

    await eventually(recorded, timeout=20, what=f"the {expected} outcome is recorded")
    assert await relay.balance(t) == (9 if upstream == "accepts" else 10)
