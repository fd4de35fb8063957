"""Tests for relay.bounces.parse over real-world-shaped bounces, reports and auto-replies."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.bounces.parse import Finding, Kind, Source, parse, suppresses
from relay.upstream.classify import FailureCode, classify_report

F = FailureCode
DATA = Path(__file__).parent / "data" / "bounces"

# file -> [(kind, source, recipient, failure code)] in report order; README.md there says where
# each one's shape comes from.
EXPECTED: dict[str, list[tuple[Kind, Source, str | None, FailureCode | None]]] = {
    "postfix-user-unknown.eml": [(Kind.BOUNCED, Source.DSN, "alice@example.com", F.NO_SUCH_USER)],
    "postfix-delayed.eml": [(Kind.DELAYED, Source.DSN, "bob@example.net", F.CONNECT_FAILED)],
    "postfix-multi-recipient.eml": [
        (Kind.BOUNCED, Source.DSN, "carol@example.org", F.MAILBOX_FULL),
        (Kind.BOUNCED, Source.DSN, "dan@nowhere.example", F.BAD_DOMAIN),
        # erin (delivered) and frank (relayed) yield nothing
    ],
    "exim-dsn.eml": [(Kind.BOUNCED, Source.DSN, "grace@example.co.uk", F.ACCOUNT_DISABLED)],
    "exim-plain.eml": [(Kind.BOUNCED, Source.PLAIN_BOUNCE, "heidi@example.de", F.NO_SUCH_USER)],
    "sendmail-dsn.eml": [(Kind.BOUNCED, Source.DSN, "ivan@example.edu", F.NO_SUCH_USER)],
    "sendmail-delayed.eml": [(Kind.DELAYED, Source.DSN, "judy@example.jp", F.SERVER_BUSY)],
    "exchange-online-dsn.eml": [(Kind.BOUNCED, Source.DSN, "mallory@contoso.example", F.NO_SUCH_USER)],
    "exchange-online-ndr-no-dsn.eml": [
        (Kind.BOUNCED, Source.PLAIN_BOUNCE, "niaj@fabrikam.example", F.NO_SUCH_USER)],
    "exchange2003-plain-ndr.eml": [(Kind.BOUNCED, Source.PLAIN_BOUNCE, "olivia@corp.example", F.NO_SUCH_USER)],
    "outlook-com-delayed-crlf.eml": [(Kind.DELAYED, Source.DSN, "peggy@example.com", F.EXPIRED)],
    "gmail-dsn.eml": [(Kind.BOUNCED, Source.DSN, "rupert@example.org", F.NO_SUCH_USER)],
    "gmail-plain-legacy.eml": [(Kind.BOUNCED, Source.PLAIN_BOUNCE, "sybil@example.jp", F.MAILBOX_FULL)],
    "yahoo-plain.eml": [(Kind.BOUNCED, Source.PLAIN_BOUNCE, "trent@yahoo.com", F.NO_SUCH_USER)],
    "yahoo-plain-disabled.eml": [(Kind.BOUNCED, Source.PLAIN_BOUNCE, "steve@yahoo.com", F.ACCOUNT_DISABLED)],
    "postfix-remote-yahoo.eml": [(Kind.BOUNCED, Source.DSN, "quinn@aol.com", F.CONTENT)],
    "postfix-delayed-yahoo-tss04.eml": [(Kind.DELAYED, Source.DSN, "rita@yahoo.com", F.TOO_MANY_CONNECTIONS)],
    "qmail-plain.eml": [
        (Kind.BOUNCED, Source.PLAIN_BOUNCE, "uma@example.net", F.NO_SUCH_USER),
        (Kind.BOUNCED, Source.PLAIN_BOUNCE, "victor@example.org", F.MAILBOX_FULL),
    ],
    "plain-bounce-unclassified.eml": [(Kind.BOUNCED, Source.PLAIN_BOUNCE, None, F.UNKNOWN)],
    "dsn-delivered.eml": [],
    "autoreply-exchange-oof.eml": [(Kind.AUTO_REPLIED, Source.AUTO_REPLY, None, F.AUTO_REPLY)],
    "autoreply-gmail-vacation.eml": [(Kind.AUTO_REPLIED, Source.AUTO_REPLY, None, F.AUTO_REPLY)],
    "autoreply-x-autoreply.eml": [(Kind.AUTO_REPLIED, Source.AUTO_REPLY, None, F.AUTO_REPLY)],
    "autoreply-cpanel-autorespond.eml": [(Kind.AUTO_REPLIED, Source.AUTO_REPLY, None, F.AUTO_REPLY)],
    "arf-yahoo.eml": [(Kind.COMPLAINED, Source.ARF, "amy@yahoo.com", None)],
    "arf-microsoft-jmrp.eml": [(Kind.COMPLAINED, Source.JMRP, "bea@hotmail.com", None)],
    "arf-rfc5965.eml": [(Kind.COMPLAINED, Source.ARF, "brett@example.com", None)],
    "other-human-reply.eml": [(Kind.BOUNCED, Source.OTHER, None, F.INFO_OTHER)],
}

def _read(name: str) -> list[Finding]:
    return parse((DATA / name).read_bytes())


def test_every_data_file_has_an_expectation() -> None:
    assert sorted(p.name for p in DATA.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_findings(name: str) -> None:
    got = [(f.kind, f.source, f.recipient, f.failure_code) for f in _read(name)]
    assert got == EXPECTED[name]


def test_dsn_fields_are_carried() -> None:
    (finding,) = _read("postfix-user-unknown.eml")
    assert finding.status == "5.1.1"
    assert finding.remote_mta == "mx.example.com"
    assert finding.diagnostic == (
        "smtp; 550 5.1.1 <alice@example.com>: Recipient address rejected: User unknown in virtual "
        "mailbox table")


def test_plain_bounce_reply_code_is_read() -> None:
    (finding,) = _read("yahoo-plain-disabled.eml")
    assert finding.diagnostic is not None and finding.diagnostic.startswith("554: delivery error")


def test_qmail_status_notation_is_read() -> None:
    first, second = _read("qmail-plain.eml")
    assert first.status == "5.1.1" and first.diagnostic == "Sorry, no mailbox here by that name. (#5.1.1)"
    assert second.status == "5.2.2"


def test_feedback_type_is_carried() -> None:
    assert [f.feedback_type for f in _read("arf-yahoo.eml")] == ["abuse"]


def _arf(feedback_type: str, rcpt: str = "Original-Rcpt-To: a@example.com\n") -> bytes:
    return (
        "From: fbl@isp.example\nTo: b+x@bounces.example.com\nSubject: report\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nA report.\n\n"
        f"--b\nContent-Type: message/feedback-report\n\nFeedback-Type: {feedback_type}\n"
        f"User-Agent: x/1\nVersion: 1\n{rcpt}\n--b--\n"
    ).encode()


@pytest.mark.parametrize("feedback_type", ["abuse", "fraud", "virus", "other", "opt-out"])
def test_complaint_feedback_types(feedback_type: str) -> None:
    (finding,) = parse(_arf(feedback_type))
    assert (finding.kind, finding.recipient, finding.feedback_type) == (
        Kind.COMPLAINED, "a@example.com", feedback_type)


@pytest.mark.parametrize("feedback_type", ["not-spam", "auth-failure"])
def test_feedback_that_is_not_a_complaint_yields_nothing(feedback_type: str) -> None:
    assert parse(_arf(feedback_type)) == []


def test_feedback_without_recipient_is_a_complaint_without_recipient() -> None:
    (finding,) = parse(_arf("abuse", rcpt=""))
    assert finding.kind is Kind.COMPLAINED and finding.recipient is None


def _simple(headers: str, body: str = "Hello.\n") -> bytes:
    return (f"From: someone@example.org\nTo: b+x@bounces.example.com\n{headers}\n{body}").encode()


@pytest.mark.parametrize("headers", [
    "Subject: Re: hi\nAuto-Submitted: auto-replied\n",
    "Subject: Re: hi\nAuto-Submitted: auto-replied (vacation)\n",
    "Subject: Re: hi\nX-Autoreply: yes\n",
    "Subject: Re: hi\nX-Autorespond: on\n",
    "Subject: Re: hi\nPrecedence: auto_reply\n",
    "Subject: Re: hi\nX-Autogenerated: Reply\n",
    "Subject: Re: hi\nX-Apple-Action: VACATION\n",
    "Subject: Re: hi\nX-MS-Exchange-Inbox-Rules-Loop: someone@example.org\n",
    "Subject: Automatic reply: hi\n",
    "Subject: Out of Office: hi\n",
    "Subject: Abwesenheitsnotiz: hi\n",
])
def test_auto_reply_markers(headers: str) -> None:
    (finding,) = parse(_simple(headers))
    assert (finding.kind, finding.failure_code) == (Kind.AUTO_REPLIED, F.AUTO_REPLY)


@pytest.mark.parametrize("headers", [
    "Subject: Re: hi\nAuto-Submitted: auto-generated\n",
    "Subject: Re: hi\nAuto-Submitted: no\n",
    "Subject: Re: hi\nX-Autoreply: no\n",
    "Subject: Re: hi\nPrecedence: bulk\n",
])
def test_not_auto_reply_markers(headers: str) -> None:
    (finding,) = parse(_simple(headers))
    assert (finding.kind, finding.source, finding.failure_code) == (Kind.BOUNCED, Source.OTHER, F.INFO_OTHER)


def test_auto_submitted_on_a_plain_bounce_does_not_make_it_an_auto_reply() -> None:
    # Exim marks its bounces auto-replied; the bounce look wins over the weak marker.
    (finding,) = _read("exim-plain.eml")
    assert finding.kind is Kind.BOUNCED


def test_dsn_without_action_uses_the_status_class() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example\nTo: b+x@bounces.example.com\nSubject: x\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
        b"Final-Recipient: rfc822; <a@example.com>\nStatus: 5.1.1\n\n"
        b"Final-Recipient: rfc822; b@example.com\nStatus: 4.2.2 (mailbox full)\n\n--b--\n"
    )
    got = [(f.kind, f.recipient, f.failure_code) for f in parse(raw)]
    assert got == [(Kind.BOUNCED, "a@example.com", F.NO_SUCH_USER),
                   (Kind.DELAYED, "b@example.com", F.MAILBOX_FULL)]


def test_base64_encoded_delivery_status_is_decoded() -> None:
    report = base64.encodebytes(
        b"Reporting-MTA: dns; mx.example\r\n\r\nFinal-Recipient: rfc822; a@example.com\r\n"
        b"Action: failed\r\nStatus: 5.2.2\r\nDiagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n")
    raw = (
        b"From: MAILER-DAEMON@mx.example\nTo: b+x@bounces.example.com\nSubject: x\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        b"--b\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n"
        + report + b"\n--b--\n"
    )
    (finding,) = parse(raw)
    assert (finding.kind, finding.source, finding.recipient, finding.failure_code) == (
        Kind.BOUNCED, Source.DSN, "a@example.com", F.MAILBOX_FULL)


def test_delivery_status_part_without_recipient_blocks_falls_back_to_the_text() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example\nTo: b+x@bounces.example.com\nSubject: Undelivered Mail\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\n<a@example.com>: host mx said: 550 5.1.1 User unknown\n\n"
        b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n--b--\n"
    )
    (finding,) = parse(raw)
    assert (finding.kind, finding.source, finding.recipient, finding.failure_code) == (
        Kind.BOUNCED, Source.PLAIN_BOUNCE, "a@example.com", F.NO_SUCH_USER)


@pytest.mark.parametrize("raw", [b"", b"\r\n\r\n", b"just some text without a colon\n", b"\x00\xff\xfe"])
def test_unparseable(raw: bytes) -> None:
    (finding,) = parse(raw)
    assert finding.kind is Kind.UNPARSEABLE and finding.diagnostic


def test_deep_nesting_does_not_raise() -> None:
    depth = 3000
    head = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(depth))
    raw = ("From: a@example.org\nSubject: x\nMIME-Version: 1.0\n" + head + "Content-Type: text/plain\n\nx\n")
    findings = parse(raw.encode())
    assert isinstance(findings, list) and findings


def test_broken_headers_and_charsets_do_not_raise() -> None:
    raw = (
        b"From: <<<@@@>>>\nTo: \"unterminated\nSubject: =?x-unknown?q?=ff=fe?=\nMIME-Version: 1.0\n"
        b"In-Reply-To: <<<\nContent-Type: text/plain; charset=x-no-such-charset\n"
        b"Content-Transfer-Encoding: base64\n\n!!!not base64!!!\n"
    )
    findings = parse(raw)
    assert [f.kind for f in findings] == [Kind.BOUNCED]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_any_bytes_yield_findings_never_an_exception(raw: bytes) -> None:
    findings = parse(raw)
    assert isinstance(findings, list)
    assert all(isinstance(f, Finding) for f in findings)


_PIECES = st.sampled_from([
    b"From: MAILER-DAEMON@x\n", b"Subject: Undeliverable: x\n", b"Auto-Submitted: auto-replied\n",
    b"X-Failed-Recipients: a@b.c, ,,<>\n", b"MIME-Version: 1.0\n",
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n',
    b'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\n',
    b"\n", b"--b\n", b"--b--\n", b"Content-Type: message/delivery-status\n",
    b"Content-Type: message/feedback-report\n", b"Content-Type: message/rfc822\n",
    b"Content-Type: text/rfc822-headers\n", b"Content-Transfer-Encoding: base64\n",
    b"Final-Recipient: rfc822; a@b.c\n", b"Action: failed\n", b"Status: 5.1.1\n", b"Status: 9.9\n",
    b"Diagnostic-Code: smtp; 550 5.1.1 x\n", b"Diagnostic-Code: ;\n", b"Original-Rcpt-To: ,<>\n",
    b"Feedback-Type: abuse\n", b"Message-ID: <a@b>\n", b"X-Relay-Message-Id: zz\n", b" folded\n",
    b"<a@b.c>:\n", b"550 5.1.1 (#5.1.1)\n", b"\xff\xfe\x00", b"=?utf-8?q?=ff?=\n",
])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_PIECES, max_size=40))
def test_any_arrangement_of_report_pieces_never_raises(pieces: list[bytes]) -> None:
    findings = parse(b"".join(pieces))
    assert all(isinstance(f, Finding) for f in findings)


@pytest.mark.parametrize(("status", "diagnostic", "expected"), [
    ("5.1.1", "smtp; 550 5.1.1 <a@example.com>: Recipient address rejected: User unknown", F.NO_SUCH_USER),
    ("5.0.0", "smtp; 550 5.1.1 RESOLVER.ADR.RecipNotFound; not found", F.NO_SUCH_USER),
    # Exchange's 5.1.10 is "recipient not found", not RFC 7505's null MX: the token says so.
    ("5.1.10", "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient m@contoso.example not found by "
     "SMTP address lookup", F.NO_SUCH_USER),
    ("5.1.10", "smtp; 556 5.1.10 <b@example.com>: Recipient address has null MX", F.BAD_DOMAIN),
    ("5.0.0", "smtp; 550 5.2.1 The email account that you tried to reach is disabled.", F.ACCOUNT_DISABLED),
    ("4.4.1", "X-Postfix; connect to mx.example.net[192.0.2.40]:25: Connection timed out", F.CONNECT_FAILED),
    ("5.2.2", "smtp;552 5.2.2 Mailbox full", F.MAILBOX_FULL),
    ("5.0.0", "X-Postfix; mail for example.com loops back to myself", F.REJECTED_OTHER),
    ("4.0.0", None, F.TEMPORARY_OTHER),
    ("5.4.4", "X-Postfix; Host or domain name not found", F.BAD_DOMAIN),
    ("5.7.1 (delivery not authorized)", "smtp; 554 5.7.1 Message rejected as spam", F.CONTENT),
    (None, None, F.UNKNOWN),
    ("", "", F.UNKNOWN),
])
def test_classify_report(status: str | None, diagnostic: str | None, expected: FailureCode) -> None:
    assert classify_report(status, diagnostic) is expected


def test_a_report_naming_thousands_of_recipients_is_cut_short() -> None:
    raw = (b'From: x@y\nMIME-Version: 1.0\nContent-Type: multipart/report; boundary="b"\n\n--b\n'
           b"Content-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n"
           + b"Final-Recipient: rfc822; a@b\nAction: failed\nStatus: 5.1.1\n\n" * 3000 + b"--b--\n")
    findings = parse(raw)
    assert 50 <= len(findings) <= 100
    assert {f.kind for f in findings} == {Kind.BOUNCED}


@pytest.mark.parametrize("raw", [
    b"From: MAILER-DAEMON@x\nSubject: failure notice\n\n" + b"-" * 300_000,
    b"Subject: " + b"a " * 150_000 + b"\nFrom: MAILER-DAEMON@x\n\nx",
    b"From: x@y\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n"
    + b"--b\nContent-Type: text/plain\n\nx\n" * 5000 + b"--b--\n",
], ids=["dash-line", "huge-subject", "many-parts"])
def test_hostile_inputs_are_read_within_the_input_bounds(raw: bytes) -> None:
    # bench/bounce_parse.py times these; here: they finish with one finding, cut at the bounds.
    (finding,) = parse(raw)
    assert finding.kind is Kind.BOUNCED


@pytest.mark.parametrize(("finding", "expected"), [
    (Finding(Kind.COMPLAINED, Source.ARF), True),
    (Finding(Kind.BOUNCED, Source.DSN, F.NO_SUCH_USER, status="5.1.1"), True),
    (Finding(Kind.BOUNCED, Source.DSN, F.BAD_DOMAIN, status="5.4.4"), True),
    (Finding(Kind.BOUNCED, Source.DSN, F.ADDRESS_GONE, status="5.1.6"), True),
    (Finding(Kind.BOUNCED, Source.DSN, F.CONTENT, status="5.7.1"), True),
    (Finding(Kind.BOUNCED, Source.PLAIN_BOUNCE, F.IP_BLOCKLISTED), True),
    (Finding(Kind.BOUNCED, Source.DSN, F.TOO_MANY_CONNECTIONS, status="4.7.0"), False),
    (Finding(Kind.BOUNCED, Source.DSN, F.MAILBOX_FULL, status="5.2.2"), False),
    (Finding(Kind.BOUNCED, Source.DSN, F.ADDRESS_OTHER, status="5.1.0"), False),
    (Finding(Kind.BOUNCED, Source.OTHER, F.INFO_OTHER), False),
    (Finding(Kind.BOUNCED, Source.PLAIN_BOUNCE, F.UNKNOWN), False),
    (Finding(Kind.DELAYED, Source.DSN, F.NO_SUCH_USER, status="4.1.1"), False),
    (Finding(Kind.AUTO_REPLIED, Source.AUTO_REPLY, F.AUTO_REPLY), False),
    (Finding(Kind.UNPARSEABLE, Source.UNPARSEABLE), False),
])
def test_suppresses(finding: Finding, expected: bool) -> None:
    assert suppresses(finding) is expected


@pytest.mark.parametrize(("name", "expected"), [
    ("postfix-user-unknown.eml", [True]), ("postfix-multi-recipient.eml", [False, True]),
    ("postfix-remote-yahoo.eml", [True]), ("arf-yahoo.eml", [True]), ("postfix-delayed.eml", [False]),
    ("autoreply-exchange-oof.eml", [False]), ("qmail-plain.eml", [True, False]),
])
def test_suppresses_on_the_data_files(name: str, expected: list[bool]) -> None:
    assert [suppresses(f) for f in _read(name)] == expected
