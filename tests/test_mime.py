"""relay.mime and compose.compose against the email package: the same bytes, for any request."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import mime
from relay.compose import Mailbox, SendRequest, compose

NOW = datetime(2026, 11, 23, 5, 15, 4, tzinfo=UTC)
RECEIVED = "from [127.0.0.1] by relay.example with HTTP id 0123456789abcdef; Mon, 23 Nov 2026 05:15:04 +0000"
_BOUNDARY = re.compile(rb'boundary="([^"]+)"')
_MESSAGE_ID = re.compile(rb"<[0-9a-f]{32}@")


def reference(request: SendRequest, *, hostname: str, received: str | None, now: datetime) -> bytes:
    """What compose wrote with EmailMessage before relay.mime (Received: set raw, on one line)."""
    message = EmailMessage(policy=mime.POLICY)
    if received:
        message.set_raw("Received", received)
    message["From"] = Address(display_name=request.sender.name, addr_spec=request.sender.address)
    message["To"] = [Address(display_name=m.name, addr_spec=m.address) for m in request.to]
    if request.cc:
        message["Cc"] = [Address(display_name=m.name, addr_spec=m.address) for m in request.cc]
    if request.reply_to:
        message["Reply-To"] = [Address(display_name=m.name, addr_spec=m.address) for m in request.reply_to]
    if request.subject is not None:
        message["Subject"] = request.subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<{'0' * 32}@{hostname}>"
    for name, value in request.headers:
        message.set_raw(name, value if value.isascii()
                        else Header(value, "utf-8", header_name=name).encode(linesep="\r\n"))
    if request.text and request.html:
        message.set_content(request.text)
        message.add_alternative(request.html, subtype="html")
    elif request.html:
        message.set_content(request.html, subtype="html")
    else:
        message.set_content(request.text or "")
    return message.as_bytes()


def normalized(data: bytes) -> bytes:
    """The random parts (MIME boundary, Message-ID) replaced by fixed text of the same length."""
    match = _BOUNDARY.search(data)
    if match:
        data = data.replace(match[1], b"B" * len(match[1]))
    return _MESSAGE_ID.sub(b"<" + b"0" * 32 + b"@", data)


def assert_same(request: SendRequest, hostname: str = "relay.example", received: str | None = RECEIVED) -> bytes:
    ours = compose(request, hostname=hostname, received=received, now=NOW)
    theirs = reference(request, hostname=hostname, received=received, now=NOW)
    assert normalized(ours) == normalized(theirs)
    return ours


# -- strategies ---------------------------------------------------------------------------------

_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_TRICKY = " .,;:\"()<>[]@\\\t=?é日—\u00a0"
names = st.one_of(st.just(""), st.text(_ATEXT + " ", min_size=1, max_size=30),
                  st.text(_ATEXT + _TRICKY, min_size=1, max_size=40),
                  st.sampled_from(["=?utf-8?q?Zo=C3=AB?=", "Ann =?utf-8?q?x?= Lee", "A.B", "\"Q\""]))
local = st.text("abcxyz0189!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=20)
domains = st.sampled_from(["example.com", "mail.example.org", "x-y.example", "a.b.c.d.example.net",
                           "very-long-subdomain-name-for-folding.example.com"])
addresses = st.one_of(st.builds(lambda u, d: f"{u}@{d}", local, domains),
                      st.builds(lambda u, v, d: f"{u}.{v}@{d}", local, local, domains),
                      st.sampled_from(['"john doe"@example.com', "user+tag@example.com"]))
mailboxes = st.builds(lambda a, n: Mailbox(a, n.strip()), addresses, names)
header_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=120)
subjects = st.one_of(st.none(), header_text, st.text("abc XYZ=?-:()<>", max_size=100),
                     st.sampled_from(["", " lead", "trail ", "two  spaces", "=?utf-8?q?x?=", "a" * 75]))
bodies = st.one_of(st.none(), st.text(max_size=400), st.text("ab c.\n\r-", max_size=300),
                   st.sampled_from(["From here\n.dot\n--x\n", "x" * 200, "é" * 100 + "\n" * 3, "\r\n" * 12]),
                   # quoted-printable with 10, 11 and 12 lines: the encoder takes a shortcut up to 10
                   st.builds(lambda n: ("long line " * 9 + "\n") * n, st.integers(9, 12)))
extra_names = st.sampled_from(["X-Tag", "List-Unsubscribe", "X-Campaign-ID", "x-lower"])
extras = st.lists(st.tuples(extra_names, header_text), max_size=3, unique_by=lambda t: t[0])


@st.composite
def requests(draw: st.DrawFn) -> SendRequest:
    text, html = draw(bodies), draw(bodies)
    if not text and not html:
        text = "fallback body"
    return SendRequest(
        sender=draw(mailboxes), to=tuple(draw(st.lists(mailboxes, min_size=1, max_size=5))),
        cc=tuple(draw(st.lists(mailboxes, max_size=3))), bcc=tuple(draw(st.lists(mailboxes, max_size=2))),
        reply_to=tuple(draw(st.lists(mailboxes, max_size=2))), subject=draw(subjects),
        html=html, text=text, headers=tuple(draw(extras)),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.sampled_from(["relay.example", "h", "[127.0.0.1]", "a..b", "x" * 70 + ".example"]),
       st.sampled_from([RECEIVED, None]))
def test_compose_writes_what_the_email_package_writes(request: SendRequest, hostname: str,
                                                      received: str | None) -> None:
    assert_same(request, hostname, received)


# -- named cases ---------------------------------------------------------------------------------

PLAIN = SendRequest(sender=Mailbox("shop@bench.example", "Bench Shop"), to=(Mailbox("ada@example.com"),),
                    subject="Your order #48213 has shipped", text="Hello Ada,\n" + "word " * 40 + "\n")


def test_plain_request_needs_no_header_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of relay.mime: a plain request never reaches the email package's header classes."""
    def parsed(name: str, value: object) -> str:
        raise AssertionError(f"{name} went through the email package")

    monkeypatch.setattr(mime, "_rendered", parsed)
    both = SendRequest(sender=PLAIN.sender, to=PLAIN.to, cc=(Mailbox("b@example.com", "Bob"),),
                       reply_to=(Mailbox("r@example.com"),), subject="Hi", text="t", html="<p>h</p>",
                       headers=(("X-Tag", "abc"),))
    for request in (PLAIN, both):
        compose(request, hostname="relay.example", received=RECEIVED, now=NOW)


@pytest.mark.parametrize("request_", [
    PLAIN,
    SendRequest(sender=Mailbox("a@example.com", "Smith, Alice"), to=(Mailbox("b@example.com", "Zoë"),),
                subject="Grüße aus Köln", html="<p>é</p>" * 50, text="plain\n" * 20),
    SendRequest(sender=Mailbox("a@example.com"), to=tuple(Mailbox(f"user{i}@example.com") for i in range(8)),
                subject="x" * 200, html="<b>x</b>" * 30),
    SendRequest(sender=Mailbox("a@example.com"), to=(Mailbox("b@example.com"),), text="日本語のテキスト\n" * 15),
], ids=["plain", "non-ascii-qp", "folded-long", "base64"])
def test_named_cases_match_and_read_back(request_: SendRequest) -> None:
    data = assert_same(request_)
    parsed = message_from_bytes(data, policy=policy.default)
    assert parsed["From"].addresses[0].addr_spec == request_.sender.address
    assert [a.addr_spec for a in parsed["To"].addresses] == [m.address for m in request_.to]
    if request_.subject is not None:
        assert parsed["Subject"] == request_.subject
    for subtype, expected in (("plain", request_.text), ("html", request_.html)):
        part = parsed.get_body(preferencelist=(subtype,))
        if expected:
            assert part is not None  # set_content ends every body with a line break
            assert part.get_content().replace("\r\n", "\n").rstrip("\n") == expected.replace("\r\n", "\n").rstrip("\n")
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_boundary_never_occurs_in_the_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A boundary drawn twice in a row that the text already contains is drawn again."""
    draws = iter([1, 1, 2])
    monkeypatch.setattr(mime.random, "randrange", lambda _n: next(draws))
    taken = "=" * 15 + "1".zfill(19) + "=="
    data = mime.message(["From: a@example.com\r\n"], text=f"--{taken}\n", html="<p>x</p>")
    assert f'boundary="{"=" * 15 + "2".zfill(19) + "=="}"'.encode() in data
