"""Tests for relay.upstream.classify: real upstream replies mapped to the failure-code contract."""

from __future__ import annotations

import pytest

from relay.upstream.classify import (
    FailureCode,
    classify,
    for_connect_failure,
    for_timeout,
    split_enhanced,
)

F = FailureCode

# (reply code, explicit enhanced code or None, reply text as the upstream sent it, expected)
REAL_REPLIES = [
    # --- Gmail ---
    pytest.param(
        550, None,
        "550-5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces.",
        F.NO_SUCH_USER, id="gmail-5.1.1-no-such-user"),
    pytest.param(
        452, None,
        "452-4.2.2 The email account that you tried to reach is over quota. Please direct the "
        "recipient to https://support.google.com/mail/?p=OverQuotaTemp",
        F.MAILBOX_FULL, id="gmail-4.2.2-over-quota"),
    pytest.param(
        421, None,
        "421-4.7.28 [203.0.113.5] Our system has detected an unusual rate of unsolicited mail "
        "originating from your IP address. To protect our users from spam, mail sent from your "
        "IP address has been temporarily rate limited.",
        F.TOO_MANY_CONNECTIONS, id="gmail-4.7.28-rate-limited-despite-spam-words"),
    pytest.param(
        550, None,
        "550-5.7.1 [203.0.113.5] Our system has detected that this message is likely unsolicited "
        "mail. To reduce the amount of spam sent to Gmail, this message has been blocked.",
        F.CONTENT, id="gmail-5.7.1-unsolicited"),
    pytest.param(
        550, None,
        "550-5.7.26 This mail is unauthenticated, which poses a security risk to the sender and "
        "Gmail users, and has been blocked. The sender must authenticate with at least one of "
        "SPF or DKIM. For this message, DKIM checks did not pass and SPF check for [example.com] "
        "did not pass with ip: [203.0.113.5]. To best protect our users from spam, the message "
        "has been blocked.",
        F.REJECTED_OTHER, id="gmail-5.7.26-unauthenticated-not-content"),
    pytest.param(
        550, None,
        "550 5.7.26 Unauthenticated email from example.com is not accepted due to domain's "
        "DMARC policy.",
        F.REJECTED_OTHER, id="gmail-5.7.26-dmarc"),
    pytest.param(
        550, None, "550-5.2.1 The email account that you tried to reach is disabled.",
        F.ACCOUNT_DISABLED, id="gmail-5.2.1-disabled"),
    pytest.param(
        452, None,
        "452-4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
        "additional messages from being delivered. Please resend your message at a later time.",
        F.TOO_MANY_CONNECTIONS, id="gmail-4.2.1-recipient-rate-beats-X.2.1"),
    pytest.param(
        552, None, "552-5.2.3 Your message exceeded Google's message size limits.",
        F.REJECTED_OTHER, id="gmail-5.2.3-too-big-not-mailbox-full"),
    pytest.param(
        421, None, "421-4.7.0 Try again later, closing connection. (EHLO)",
        F.SERVER_BUSY, id="gmail-4.7.0-try-later-is-not-a-rejection"),
    pytest.param(
        550, None,
        "550-5.7.25 [203.0.113.5] The IP address sending this message does not have a PTR "
        "record setup, or the corresponding forward DNS entry does not point to the sending IP.",
        F.REJECTED_OTHER, id="gmail-5.7.25-no-ptr"),
    pytest.param(
        553, None,
        "553-5.1.3 The recipient address <foo@@example.com> is not a valid RFC-5321 address.",
        F.BAD_ADDRESS_FORMAT, id="gmail-5.1.3-bad-syntax"),
    pytest.param(
        550, "5.7.1",
        "Messages missing a valid address in From: header, or having no From: header, are not "
        "accepted.",
        F.REJECTED_OTHER, id="gmail-5.7.1-from-header-explicit-enhanced"),
    # --- Outlook / Office 365 / Exchange ---
    pytest.param(
        550, None, "550 5.5.0 Requested action not taken: mailbox unavailable",
        F.ADDRESS_OTHER, id="outlook-5.5.0-mailbox-unavailable-not-protocol"),
    pytest.param(
        550, None,
        "550 5.7.1 Service unavailable; Client host [203.0.113.5] blocked using Spamhaus. To "
        "request removal from this list see https://www.spamhaus.org/query/ip/203.0.113.5 "
        "(AS3130). [BN8NAM12FT025.eop-nam12.prod.protection.outlook.com]",
        F.IP_BLOCKLISTED, id="outlook-spamhaus"),
    pytest.param(
        550, None,
        "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) "
        "[DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com]",
        F.NO_SUCH_USER, id="outlook-5.4.1-dbeb-access-denied"),
    pytest.param(
        452, None, "452 4.5.3 Too many recipients",
        F.PROTOCOL_ERROR, id="outlook-4.5.3-too-many-recipients"),
    pytest.param(
        550, None,
        "550 5.7.1 Unfortunately, messages from [203.0.113.5] weren't sent. Please contact your "
        "Internet service provider since part of their network is on our block list (S3150).",
        F.BLOCKLISTED, id="outlook-S3150-own-block-list"),
    pytest.param(
        550, None,
        "550 5.7.606 Access denied, banned sending IP [203.0.113.5]. To request removal from "
        "this list please visit https://sender.office.com/ and follow the directions.",
        F.BLOCKLISTED, id="outlook-5.7.606-banned-ip"),
    pytest.param(
        550, None, "550 5.4.1 Relay Access Denied [BN1NAM02FT018.eop-nam02.prod.protection]",
        F.DOMAIN_NOT_ACCEPTED, id="outlook-5.4.1-relay-access-denied"),
    pytest.param(
        550, None, "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",
        F.DOMAIN_NOT_ACCEPTED, id="exchange-5.7.54-non-accepted-domain"),
    pytest.param(
        554, None,
        "554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException."
        "MapiExceptionShutoffQuotaExceeded",
        F.MAILBOX_FULL, id="exchange-5.2.2-mailbox-full"),
    pytest.param(
        550, None,
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        F.NO_SUCH_USER, id="exchange-5.1.10-text-beats-null-mx-meaning"),
    pytest.param(
        550, None, "550 5.7.1 Message rejected due to content restrictions",
        F.CONTENT, id="exchange-content-restrictions"),
    pytest.param(
        550, None, "550 4.4.7 QUEUE.Expired; message expired",
        F.EXPIRED, id="exchange-4.4.7-queue-expired"),
    pytest.param(
        None, None, "QUEUE.Expired; message expired",
        F.EXPIRED, id="exchange-queue-expired-text-only"),
    # --- Yahoo / AOL ---
    pytest.param(
        554, None,
        "554 5.7.9 Message not accepted for policy reasons.  See "
        "https://postmaster.yahooinc.com/error-codes",
        F.CONTENT, id="yahoo-5.7.9-policy"),
    pytest.param(
        421, None,
        "421 4.7.0 [TSS04] Messages from 203.0.113.5 temporarily deferred due to unexpected "
        "volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        F.TOO_MANY_CONNECTIONS, id="yahoo-TSS04-deferred"),
    pytest.param(
        552, None, "552 1 Requested mail action aborted, mailbox not found",
        F.NO_SUCH_USER, id="yahoo-552-mailbox-not-found-not-full"),
    pytest.param(
        554, None,
        "554 delivery error: dd This user doesn't have a yahoo.com account (foo@yahoo.com) [0] "
        "- mta1234.mail.bf1.yahoo.com",
        F.NO_SUCH_USER, id="yahoo-dd-no-account"),
    pytest.param(
        554, None,
        "554 delivery error: dd Sorry your message to foo@yahoo.com cannot be delivered. This "
        "mailbox is disabled (554.30). - mta1234.mail.ne1.yahoo.com",
        F.ACCOUNT_DISABLED, id="yahoo-dd-disabled"),
    # --- Postfix ---
    pytest.param(
        550, None,
        "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in virtual "
        "mailbox table",
        F.NO_SUCH_USER, id="postfix-user-unknown"),
    pytest.param(
        554, None, "554 5.7.1 <bob@example.org>: Relay access denied",
        F.DOMAIN_NOT_ACCEPTED, id="postfix-relay-access-denied"),
    pytest.param(
        450, None,
        "450 4.2.0 <bob@example.com>: Recipient address rejected: Greylisted, see "
        "http://postgrey.schweikert.ch/help/example.com.html",
        F.TEMPORARY_OTHER, id="postfix-postgrey"),
    pytest.param(
        552, None, "552 5.2.2 <bob@example.com>: Recipient address rejected: Mailbox full",
        F.MAILBOX_FULL, id="postfix-mailbox-full"),
    pytest.param(
        554, None,
        "554 5.7.1 Service unavailable; Client host [1.2.3.4] blocked using zen.spamhaus.org; "
        "https://www.spamhaus.org/query/ip/1.2.3.4",
        F.IP_BLOCKLISTED, id="postfix-zen-spamhaus"),
    pytest.param(
        554, None,
        "554 5.7.1 Service unavailable; Sender address [alice@spammy.example] blocked using "
        "dbl.spamhaus.org; https://www.spamhaus.org/query/domain/spammy.example",
        F.BLOCKLISTED, id="postfix-rhsbl-sender-domain-not-ip"),
    pytest.param(
        550, None,
        "550 5.1.2 <bob@nonexistent.example>: Recipient address rejected: Domain not found",
        F.BAD_DOMAIN, id="postfix-domain-not-found"),
    pytest.param(
        None, None,
        "Host or domain name not found. Name service error for name=nonexistent.example type=A: "
        "Host not found",
        F.BAD_DOMAIN, id="postfix-dsn-host-not-found"),
    pytest.param(
        None, None, "<bob@example.com>: Recipient address rejected: Greylisted for 300 seconds",
        F.TEMPORARY_OTHER, id="postfix-greylist-log-without-code"),
    pytest.param(
        None, None, "connect to mx.example.com[192.0.2.10]:25: Connection timed out",
        F.CONNECT_FAILED, id="postfix-connect-timed-out-is-connect"),
    pytest.param(
        None, None,
        "delivery temporarily suspended: connect to mx.example.com[192.0.2.10]:25: "
        "Connection refused",
        F.CONNECT_FAILED, id="postfix-suspended-is-not-account-suspended"),
    pytest.param(
        None, None,
        "conversation with mx.example.com[192.0.2.10] timed out while receiving the initial "
        "server greeting",
        F.PROTOCOL_ERROR, id="postfix-conversation-timeout"),
    pytest.param(
        421, None, "421 4.4.2 mx.example.com Error: timeout exceeded",
        F.PROTOCOL_ERROR, id="postfix-421-timeout-beats-421"),
    pytest.param(
        452, None, "452 4.3.1 Insufficient system storage",
        F.SERVER_BUSY, id="postfix-system-storage-is-server-busy"),
    pytest.param(
        452, "4.3.1", "Mail system full", F.SERVER_BUSY, id="rfc3463-4.3.1-mail-system-full"),
    pytest.param(
        451, "4.4.1", "No answer from host", F.CONNECT_FAILED, id="rfc3463-4.4.1-no-answer"),
    pytest.param(
        553, "5.1.8", "Sender rejected", F.REJECTED_OTHER,
        id="rfc3463-5.1.8-sender-not-recipient"),
    pytest.param(
        450, None, "450 4.7.1 Client host rejected: cannot find your hostname, [203.0.113.5]",
        F.TEMPORARY_OTHER, id="postfix-4.7.1-transient"),
    pytest.param(
        554, None, "554 5.7.1 Rejected: infected with Win.Test.EICAR_HDB-1",
        F.VIRUS, id="postfix-clamav-infected"),
    pytest.param(
        556, None, "556 5.1.10 <bob@example.com>: Recipient address has null MX",
        F.BAD_DOMAIN, id="postfix-null-mx"),
    # --- Exim ---
    pytest.param(550, None, "550 Unrouteable address", F.BAD_DOMAIN, id="exim-unrouteable"),
    pytest.param(
        550, None, "550 Verification failed for <alice@example.com>",
        F.REJECTED_OTHER, id="exim-sender-verify"),
    pytest.param(
        550, None,
        "550-Verification failed for <alice@example.com>\n550-Called:   192.0.2.20\n"
        "550-Sent:     RCPT TO:<alice@example.com>\n"
        "550-Response: 550 5.1.1 <alice@example.com>: User unknown\n550 Sender verify failed",
        F.REJECTED_OTHER, id="exim-sender-verify-multiline-quotes-user-unknown"),
    pytest.param(
        550, None,
        "550-Callout verification failed:\n"
        "550 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown",
        F.NO_SUCH_USER, id="exim-recipient-callout"),
    pytest.param(
        550, None, "550-Your message looks like SPAM or has been reported as SPAM",
        F.CONTENT, id="exim-spam"),
    pytest.param(
        550, None, "550 Administrative prohibition",
        F.REJECTED_OTHER, id="exim-administrative-prohibition-not-address"),
    pytest.param(
        451, None, "451 Temporary local problem - please try later",
        F.SYSTEM_OTHER, id="exim-temporary-local-problem"),
    pytest.param(
        552, None, "552 Message size exceeds maximum permitted",
        F.REJECTED_OTHER, id="exim-552-too-big-not-mailbox-full"),
    pytest.param(
        550, None, "550 This message contains a virus (Eicar-Test-Signature) and has been rejected",
        F.VIRUS, id="exim-virus"),
    pytest.param(None, None, "retry timeout exceeded", F.DEFERRED_UNTIL_EXPIRED,
                 id="exim-retry-timeout-not-protocol-timeout"),
    pytest.param(
        501, None, "501 <foo bar@example.com>: malformed address: bar@example.com> may not follow "
        "<foo",
        F.BAD_ADDRESS_FORMAT, id="exim-malformed-address-beats-501"),
    pytest.param(501, None, "501 Invalid address", F.BAD_ADDRESS_FORMAT,
                 id="invalid-address-beats-501"),
    # --- others ---
    pytest.param(
        553, None, "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
        F.DOMAIN_NOT_ACCEPTED, id="qmail-rcpthosts"),
    pytest.param(
        554, None,
        "554 Service unavailable; Client host [203.0.113.5] blocked using Barracuda "
        "Reputation; http://www.barracudanetworks.com/reputation/?r=1&ip=203.0.113.5",
        F.IP_BLOCKLISTED, id="barracuda"),
    pytest.param(
        554, None,
        "554 resimta-po-01v.sys.comcast.net comcast 203.0.113.5 found on one or more DNSBLs, see "
        "http://postmaster.comcast.net/smtp-error-codes.php#BL000001",
        F.IP_BLOCKLISTED, id="comcast-dnsbl"),
    pytest.param(
        550, None, "550 5.7.1 Mail from 203.0.113.5 refused, listed at b.barracudacentral.org",
        F.IP_BLOCKLISTED, id="listed-at-zone"),
    pytest.param(
        554, None, "554 5.7.1 Message contains a URL listed on multi.surbl.org",
        F.CONTENT, id="surbl-url-is-content-not-ip"),
    pytest.param(
        421, None, "421 4.7.0 Too many concurrent SMTP connections from this IP address; please "
        "try again later",
        F.TOO_MANY_CONNECTIONS, id="too-many-connections"),
    pytest.param(
        451, None, "451 Server busy, please try again later",
        F.SERVER_BUSY, id="server-busy-beats-451"),
    pytest.param(
        421, None, "421 4.3.2 Service not available, closing transmission channel",
        F.SERVER_BUSY, id="4.3.2-not-accepting"),
    pytest.param(
        451, None, "451 4.7.1 Greylisting in action, please come back later",
        F.TEMPORARY_OTHER, id="greylisting-4.7.1"),
    pytest.param(
        552, None, "552 5.2.2 Mailbox size limit exceeded",
        F.MAILBOX_FULL, id="mailbox-size-limit-is-quota-not-message-size"),
    pytest.param(
        550, None,
        "550 5.1.1 <bob@example.com>: Recipient address rejected: this address is no longer in "
        "use",
        F.ADDRESS_GONE, id="no-longer-in-use-beats-5.1.1"),
    pytest.param(
        500, None, '500 5.5.1 Command unrecognized: "XYZZY"',
        F.PROTOCOL_ERROR, id="command-unrecognized"),
    pytest.param(
        500, None, "500 Syntax error, command unrecognized",
        F.PROTOCOL_ERROR, id="command-syntax-is-not-address-syntax"),
    pytest.param(
        None, None, "Out of Office: I am away until Monday and will reply on my return.",
        F.AUTO_REPLY, id="out-of-office"),
    pytest.param(
        None, None,
        "This is an automated challenge-response message. Please click the link below to "
        "verify that you are a human so that your message can be delivered.",
        F.CHALLENGE_RESPONSE, id="challenge-response"),
]


@pytest.mark.parametrize(("code", "enhanced", "text", "expected"), REAL_REPLIES)
def test_real_world_replies(code: int | None, enhanced: str | None, text: str,
                            expected: FailureCode) -> None:
    assert classify(code, enhanced, text) is expected


def test_there_are_enough_real_world_cases() -> None:
    assert len(REAL_REPLIES) >= 40


@pytest.mark.parametrize(("code", "enhanced", "text", "expected"), [
    # the brief's example: a precise enhanced code beats RFC 5321's generic wording ...
    pytest.param(550, "5.1.1", "Requested action not taken: mailbox unavailable",
                 F.NO_SUCH_USER, id="explicit-5.1.1"),
    pytest.param(550, None, "550 5.1.1 Requested action not taken: mailbox unavailable",
                 F.NO_SUCH_USER, id="prefixed-5.1.1"),
    # ... and the generic wording still beats the bare reply code when nothing precise is there
    pytest.param(554, None, "Requested action not taken: mailbox unavailable",
                 F.ADDRESS_OTHER, id="no-enhanced"),
    pytest.param(550, "5.7.1", "Requested action not taken: mailbox unavailable",
                 F.REJECTED_OTHER, id="5.7.1-is-precise-enough"),
    # an explicit enhanced code wins over one found in the text
    pytest.param(550, "5.1.2", "5.1.1 rejected", F.BAD_DOMAIN, id="explicit-wins"),
    # case does not matter
    pytest.param(550, None, "USER UNKNOWN", F.NO_SUCH_USER, id="upper-case"),
])
def test_precedence(code: int | None, enhanced: str | None, text: str,
                    expected: FailureCode) -> None:
    assert classify(code, enhanced, text) is expected


@pytest.mark.parametrize(("enhanced", "expected"), [
    ("5.1.1", F.NO_SUCH_USER), ("4.1.1", F.NO_SUCH_USER), ("5.1.2", F.BAD_DOMAIN),
    ("5.1.3", F.BAD_ADDRESS_FORMAT), ("5.1.6", F.ADDRESS_GONE), ("5.1.10", F.BAD_DOMAIN),
    ("5.2.1", F.ACCOUNT_DISABLED), ("4.2.2", F.MAILBOX_FULL), ("5.2.2", F.MAILBOX_FULL),
    ("5.2.3", F.REJECTED_OTHER), ("5.3.4", F.REJECTED_OTHER), ("4.3.2", F.SERVER_BUSY),
    ("4.3.0", F.SYSTEM_OTHER), ("4.4.5", F.SERVER_BUSY), ("5.4.4", F.BAD_DOMAIN),
    ("4.4.7", F.EXPIRED), ("4.4.2", F.SYSTEM_OTHER), ("5.4.0", F.SYSTEM_OTHER),
    ("5.5.2", F.PROTOCOL_ERROR), ("4.5.3", F.PROTOCOL_ERROR), ("5.7.1", F.REJECTED_OTHER),
    ("5.7.0", F.REJECTED_OTHER), ("5.1.0", F.ADDRESS_OTHER), ("5.2.0", F.ADDRESS_OTHER),
])
def test_enhanced_code_fallback(enhanced: str, expected: FailureCode) -> None:
    # neutral text and no reply code (which alone would give UNKNOWN): the enhanced code decides
    assert classify(None, enhanced, "Requested action not taken") is expected


@pytest.mark.parametrize("enhanced", ["4.7.1", "4.7.0", "4.2.0", "4.1.0"])
def test_transient_vague_enhanced_defers_to_reply_code(enhanced: str) -> None:
    assert classify(450, enhanced, "please try again later") is F.TEMPORARY_OTHER
    assert classify(421, enhanced, "please try again later") is F.SERVER_BUSY


@pytest.mark.parametrize(("code", "expected"), [
    (421, F.SERVER_BUSY), (450, F.TEMPORARY_OTHER), (451, F.TEMPORARY_OTHER),
    (452, F.TEMPORARY_OTHER), (500, F.PROTOCOL_ERROR), (501, F.PROTOCOL_ERROR),
    (502, F.PROTOCOL_ERROR), (503, F.PROTOCOL_ERROR), (504, F.PROTOCOL_ERROR),
    (530, F.REJECTED_OTHER), (550, F.ADDRESS_OTHER), (551, F.ADDRESS_OTHER),
    (552, F.MAILBOX_FULL), (553, F.ADDRESS_OTHER), (554, F.REJECTED_OTHER),
    (555, F.REJECTED_OTHER), (250, F.INFO_OTHER), (354, F.INFO_OTHER),
    (None, F.UNKNOWN), (199, F.UNKNOWN), (600, F.UNKNOWN),
])
def test_basic_code_fallback(code: int | None, expected: FailureCode) -> None:
    assert classify(code, None, "") is expected
    assert classify(code, None, "Requested action not taken") is expected


def test_none_code_with_meaningless_text_is_unknown() -> None:
    assert classify(None, None, "") is F.UNKNOWN
    assert classify(None, None, "something odd happened") is F.UNKNOWN
    assert classify(None, "", "") is F.UNKNOWN
    assert classify(None, "garbage", "") is F.UNKNOWN


def test_success_reply_is_informational() -> None:
    assert classify(250, None, "250 2.0.0 Ok: queued as 4F1A2B3C") is F.INFO_OTHER


@pytest.mark.parametrize(("text", "expected"), [
    ("5.1.1 User unknown", ("5.1.1", "User unknown")),
    ("User unknown", (None, "User unknown")),
    ("", (None, "")),
    ("5.1.1", ("5.1.1", "")),
    ("5.1.10 RESOLVER.ADR.RecipientNotFound", ("5.1.10", "RESOLVER.ADR.RecipientNotFound")),
    # a reply code in front is dropped too, with either separator (we chose to accept raw lines)
    ("550 5.7.1 Relay access denied", ("5.7.1", "Relay access denied")),
    ("550-5.1.1 The email account", ("5.1.1", "The email account")),
    ("550 Administrative prohibition", (None, "Administrative prohibition")),
    ("550-Your message looks like SPAM", (None, "Your message looks like SPAM")),
    ("552 1 Requested mail action aborted", (None, "1 Requested mail action aborted")),
    # every line of a multi-line reply loses its prefix; the first enhanced code is returned
    ("550-5.1.1 The email account\n550-5.1.1 that you tried\n550 5.1.1 does not exist",
     ("5.1.1", "The email account\nthat you tried\ndoes not exist")),
    # aiosmtplib's shape: reply code already gone, enhanced code repeated on each line
    ("5.7.1 line one\n5.7.1 line two", ("5.7.1", "line one\nline two")),
    # not enhanced codes: wrong class, an IPv4 address, a code glued to text
    ("3.1.1 is not a class", (None, "3.1.1 is not a class")),
    ("4.2.3.4 sent too much", (None, "4.2.3.4 sent too much")),
    ("5.1.1: colon-glued", (None, "5.1.1: colon-glued")),
    # only a leading code is split off, not one quoted later
    ("Response: 550 5.1.1 User unknown", (None, "Response: 550 5.1.1 User unknown")),
])
def test_split_enhanced(text: str, expected: tuple[str | None, str]) -> None:
    assert split_enhanced(text) == expected


def test_helpers_for_non_reply_failures() -> None:
    assert for_connect_failure() is F.CONNECT_FAILED
    assert for_timeout() is F.PROTOCOL_ERROR
    assert int(for_connect_failure()) == 4003
    assert int(for_timeout()) == 4002


def test_contract_numbers_are_fixed() -> None:
    assert {m.name: int(m) for m in FailureCode} == {
        "BLOCKLISTED": 1002, "IP_BLOCKLISTED": 1003, "CONTENT": 1004,
        "TOO_MANY_CONNECTIONS": 1006, "VIRUS": 1007, "CHALLENGE_RESPONSE": 1011,
        "REJECTED_OTHER": 1999, "NO_SUCH_USER": 2001, "BAD_DOMAIN": 2002,
        "BAD_ADDRESS_FORMAT": 2003, "ADDRESS_GONE": 2004, "ADDRESS_OTHER": 2999,
        "MAILBOX_FULL": 3001, "ACCOUNT_DISABLED": 3002, "DEFERRED_UNTIL_EXPIRED": 3003,
        "TEMPORARY_OTHER": 3999, "SERVER_BUSY": 4001, "PROTOCOL_ERROR": 4002,
        "CONNECT_FAILED": 4003, "EXPIRED": 4004, "DOMAIN_NOT_ACCEPTED": 4006,
        "SYSTEM_OTHER": 4999, "AUTO_REPLY": 5001, "INFO_OTHER": 5999, "UNKNOWN": 9999,
    }
