"""The inbound parts that need no listener: route matches, the reply table, the JSON and raw payloads."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.inbound import payload, replies
from relay.inbound.routes import BadMatch, MatchKind, Route, compile_match, first_match, ordered
from relay.outbound.client import ErrorKind, HttpResult

DATA = Path(__file__).parent / "data" / "inbound"
ENVELOPE = payload.Envelope("alice@example.org", ("support@inbound.test",), "mail.example.org", "203.0.113.5", True)


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


# --- routes -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "kind", "yes", "no"), [
    ("Support@Inbound.test", MatchKind.EXACT, ["support@inbound.test", "SUPPORT@inbound.TEST"],
     ["support2@inbound.test", "support@inbound.test.evil"]),
    ("*@inbound.test", MatchKind.DOMAIN, ["a@inbound.test", "B@INBOUND.TEST"],
     ["a@sub.inbound.test", "a@inbound.tester"]),
    ("/^reply\\+[0-9a-f]+@inbound\\.test$/", MatchKind.REGEX, ["reply+abc123@inbound.test", "REPLY+AB@inbound.test"],
     ["reply+xyz@inbound.test", "xreply+ab@inbound.test"]),
    ("/support-.*@inbound\\.test/", MatchKind.REGEX, ["support-eu@inbound.test"], ["a.support-eu@inbound.test"]),
])
def test_matches(text: str, kind: MatchKind, yes: list[str], no: list[str]) -> None:
    matcher = compile_match(text)
    assert matcher.kind is kind
    assert all(matcher.matches(a) for a in yes)
    assert not any(matcher.matches(a) for a in no)


@pytest.mark.parametrize(("text", "problem"), [
    ("", "a route match is"),
    ("   ", "a route match is"),
    ("/([a-z/", "does not compile"),
    ("no-at-sign", "is not an address"),
    ("user@", "is not an address"),
    ("@domain.test", "is not an address"),
    ("a@.", "is not an address"),
    ("sup*@inbound.test", "whole local part"),
    ("a b@inbound.test", "spaces"),
    ("x" * 600, "at most 500"),
])
def test_bad_matches(text: str, problem: str) -> None:
    with pytest.raises(BadMatch, match=problem):
        compile_match(text)


def test_first_match_by_priority_then_age() -> None:
    from datetime import UTC, datetime
    wide = Route("r1", 1, "*@inbound.test", "http://a/", priority=10, created=datetime(2026, 1, 1, tzinfo=UTC))
    narrow = Route("r2", 1, "vip@inbound.test", "http://b/", priority=1, created=datetime(2026, 2, 1, tzinfo=UTC))
    older = Route("r3", 1, "/.*@inbound\\.test/", "http://c/", priority=10, created=datetime(2025, 1, 1, tzinfo=UTC))
    routes = ordered([wide, narrow, older])
    assert [r.id for r in routes] == ["r2", "r3", "r1"]
    assert first_match(routes, "vip@inbound.test") is narrow
    assert first_match(routes, "other@inbound.test") is older
    assert first_match(routes, "other@elsewhere.test") is None


def test_slow_expression_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    matcher = compile_match("/(x+x+)+y/")
    started = time.monotonic()
    assert matcher.matches("x" * 5000) is False  # bounded by the timeout, then no match
    assert time.monotonic() - started < 1
    assert "too slow" in caplog.text


# --- the reply table ------------------------------------------------------------------------------

@pytest.mark.parametrize(("result", "reply", "status", "text"), [
    (HttpResult(200), "250 2.0.0 OK: delivered to the application", 200, ""),
    (HttpResult(204), "250 2.0.0 OK: delivered to the application", 204, ""),
    (HttpResult(404, b"No such mailbox: bob\nsecond line", "text/plain"), "550 5.0.0 No such mailbox: bob", 404,
     "No such mailbox: bob"),
    (HttpResult(422, b"\n\n  caf\xc3\xa9 \x07closed  \n", "text/plain"), "550 5.0.0 caf? ?closed", 422, "caf? ?closed"),
    (HttpResult(400, b"<h1>Bad</h1>", "text/html"), f"550 5.0.0 {replies.REFUSED_TEXT}", 400, "<h1>Bad</h1>"),
    (HttpResult(403, b"", "text/plain"), f"550 5.0.0 {replies.REFUSED_TEXT}", 403, ""),
    (HttpResult(410, b"x" * 900, "text/plain"), "550 5.0.0 " + "x" * 400, 410, "x" * 400),
    (HttpResult(500, b"oops", "text/plain"), f"451 4.3.0 {replies.UNAVAILABLE_TEXT}", 500, "oops"),
    (HttpResult(503), f"451 4.3.0 {replies.UNAVAILABLE_TEXT}", 503, ""),
    (HttpResult(304), f"451 4.3.0 {replies.UNAVAILABLE_TEXT}", 304, ""),
    (HttpResult(101), f"451 4.3.0 {replies.UNAVAILABLE_TEXT}", 101, ""),
    (HttpResult(0, error=ErrorKind.UNREACHABLE, detail="refused"), f"451 4.4.1 {replies.UNAVAILABLE_TEXT}", 0,
     "unreachable: refused"),
    (HttpResult(0, error=ErrorKind.TIMEOUT), f"451 4.4.2 {replies.UNAVAILABLE_TEXT}", 0, "timeout"),
    (HttpResult(0, error=ErrorKind.TLS), f"451 4.4.1 {replies.UNAVAILABLE_TEXT}", 0, "tls"),
    (HttpResult(0, error=ErrorKind.TOO_MANY_REDIRECTS), f"451 4.4.1 {replies.UNAVAILABLE_TEXT}", 0,
     "too-many-redirects"),
    (HttpResult(0, error=ErrorKind.REFUSED_BY_SSRF), f"451 4.4.1 {replies.UNAVAILABLE_TEXT}", 0, "refused-by-ssrf"),
])
def test_reply_table(result: HttpResult, reply: str, status: int, text: str) -> None:
    verdict = replies.verdict(result)
    assert (verdict.reply, verdict.http_status, verdict.response_text) == (reply, status, text)


def test_worst_of_several() -> None:
    ok, refused, deferred = (replies.verdict(HttpResult(s)) for s in (200, 404, 503))
    assert replies.worst([ok, refused]) is refused
    assert replies.worst([refused, deferred, ok]) is deferred
    assert replies.worst([ok, ok]) is ok


def test_oversize_text() -> None:
    assert replies.oversize(None) == "552 5.3.4 message too large for this recipient"
    assert replies.oversize("Attachments over 5 MB go to https://upload.example") == (
        "552 5.3.4 Attachments over 5 MB go to https://upload.example")
    assert replies.oversize("line\r\n250 forged") == "552 5.3.4 line??250 forged"


@given(st.binary(max_size=2000), st.sampled_from(["text/plain", "text/html", ""]), st.integers(100, 599))
@settings(max_examples=300)
def test_any_answer_is_one_clean_reply_line(body: bytes, content_type: str, status: int) -> None:
    reply = replies.verdict(HttpResult(status, body[:1024], content_type)).reply
    assert reply[:3] in ("250", "550", "451")
    assert all(" " <= c <= "~" for c in reply) and len(reply) <= 420


# --- payloads ---------------------------------------------------------------------------------------

def doc(name: str, envelope: payload.Envelope = ENVELOPE) -> dict[str, object]:
    return json.loads(payload.json_body(payload.parse(load(name)), envelope))  # type: ignore[no-any-return]


def test_json_multipart_alternative() -> None:
    got = doc("thunderbird_alternative.eml")
    assert got["envelope"] == {"to": "support@inbound.test", "recipients": ["support@inbound.test"],
                               "from": "alice@example.org", "helo_domain": "mail.example.org",
                               "remote_ip": "203.0.113.5", "tls": True}
    headers = got["headers"]
    assert isinstance(headers, dict)
    assert headers["subject"] == "Café order — question"
    assert headers["message_id"] == "<1c2d3e4f-0000-4000-8000-abcdefabcdef@example.org>"
    assert isinstance(headers["received"], list) and len(headers["received"]) == 2
    assert headers["from"] == "Alice Example <alice@example.org>"
    assert "Hello, can I change my café order?" in str(got["plain"])
    assert str(got["html"]).startswith("<html><body><p>Hello")
    assert got["reply_plain"] == "Hello, can I change my café order?"
    assert got["attachments"] == []


def test_json_attachments_inline_and_forwarded() -> None:
    got = doc("outlook_attachments.eml")
    assert got["reply_plain"] == "Please find the receipt attached.\n\nRegards,\nBob"
    assert "cid:image001.png@01DB4A2B.5F3C2E10" in str(got["html"])
    attachments = got["attachments"]
    assert isinstance(attachments, list)
    assert [(a["file_name"], a["content_type"], a["disposition"]) for a in attachments] == [
        ("image001.png", "image/png", "inline"), ("receipt.pdf", "application/pdf", "attachment"),
        ("forwarded.eml", "message/rfc822", "attachment")]
    png = base64.b64decode(attachments[0]["content"])
    assert png.startswith(b"\x89PNG") and attachments[0]["size"] == len(png)
    assert attachments[0]["content_id"] == "<image001.png@01DB4A2B.5F3C2E10>"
    assert base64.b64decode(attachments[1]["content"]).startswith(b"%PDF-1.4")
    assert attachments[1]["content_id"] is None
    assert b"Subject: the original" in base64.b64decode(attachments[2]["content"])


@pytest.mark.parametrize(("name", "subject", "plain"), [
    ("latin1_8bit.eml", "Grüße", "Grüße aus Köln, ça va?"),
    ("shift_jis.eml", "こんにちは", "こんにちは、世界"),
    ("unknown_charset.eml", "unknown charset", "bytes \ufffd\ufffd here"),
])
def test_json_charsets(name: str, subject: str, plain: str) -> None:
    got = doc(name)
    assert got["headers"]["subject"] == subject  # type: ignore[index]
    assert str(got["plain"]).strip() == plain


@pytest.mark.parametrize(("name", "first_line"), [
    ("broken_boundary.eml", "This body says multipart but has no boundary line at all."),
    ("multipart_no_boundary.eml", "text without structure"),
])
def test_json_broken_structure_still_delivers_the_text(name: str, first_line: str) -> None:
    got = doc(name)
    assert str(got["plain"]).splitlines()[0] == first_line
    assert got["attachments"] == [] and got["headers"]["to"] == "info@inbound.test"  # type: ignore[index]


@given(st.binary(max_size=3000))
@settings(max_examples=300)
def test_json_never_fails(data: bytes) -> None:
    body = payload.json_body(payload.parse(data), ENVELOPE)
    assert set(json.loads(body)) == {"envelope", "headers", "plain", "html", "reply_plain", "attachments"}


@pytest.mark.parametrize(("plain", "reply"), [
    ("Thanks!\n\nOn Mon, 30 Nov 2026 at 10:00, Support <s@x.test> wrote:\n> hi", "Thanks!"),
    ("Thanks!\nOn Mon, 30 Nov 2026 at 10:00, Support\n<s@x.test> wrote:\n> hi", "Thanks!"),
    ("Yes\n\n-----Original Message-----\nFrom: a", "Yes"),
    ("Ja\n\nAm 30.11.2026 um 10:00 schrieb Support <s@x.test>:\n> hi", "Ja"),
    ("no quote here", None),
    ("> only a quote", None),
    ("", None),
])
def test_reply_text(plain: str, reply: str | None) -> None:
    assert payload.reply_text(plain) == reply


def test_header_keys() -> None:
    assert payload.header_key("Message-ID") == "message_id"
    assert payload.header_key("X-MS-Has-Attach") == "x_ms_has_attach"
    assert payload.header_key("Received-SPF") == "received_spf"


def test_raw_headers() -> None:
    envelope = payload.Envelope("a@x.test", ("b@y.test", "c@y.test"), "mx.x.test", "198.51.100.7", False)
    assert payload.raw_headers(envelope) == {
        "Content-Type": "message/rfc822", "X-Relay-Envelope-From": "a@x.test",
        "X-Relay-Envelope-To": "b@y.test, c@y.test", "X-Relay-Helo-Domain": "mx.x.test",
        "X-Relay-Remote-Ip": "198.51.100.7", "X-Relay-Tls": "false"}
