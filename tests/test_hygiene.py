"""Tests for relay.hygiene: header split, facts, relay preparation and Received formatting."""

import re
import time
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.hygiene import (
    HeaderFacts,
    format_received,
    has_bare_cr_or_lf,
    prepare_for_relay_in_place,
    read_header_facts,
    split_message,
)

RECEIVED = (
    "from helo.example ([127.0.0.1]) by relay.example.com with ESMTPSA id abc;"
    " Mon, 23 Nov 2026 01:02:03 +0000"
)
MSGID = "<abc123@relay.example.com>"
DATE = "Mon, 23 Nov 2026 01:02:03 +0000"
RECEIVED_LINE = b"Received: " + RECEIVED.encode() + b"\r\n"
MSGID_LINE = b"Message-ID: " + MSGID.encode() + b"\r\n"
DATE_LINE = b"Date: " + DATE.encode() + b"\r\n"
WHEN = datetime(2026, 11, 23, 1, 2, 3, tzinfo=UTC)


def msg(*header_lines: bytes, body: bytes = b"Hello.\r\n") -> bytes:
    return b"".join(line + b"\r\n" for line in header_lines) + b"\r\n" + body


def prepare(data: bytes, **kwargs: tuple[str, ...]) -> bytes:
    """What SMTP relays for data: prepare_for_relay_in_place on a copy, the same whatever precedes
    the message in the buffer (SMTP's receive buffer starts with the DATA line's CRLF)."""
    outs = set()
    for lead in (b"", b"\r\n", b"xyz"):
        buffer = bytearray(lead + data)
        assert prepare_for_relay_in_place(buffer, len(lead), received=RECEIVED, message_id=MSGID,
                                          date=DATE, **kwargs) is buffer
        outs.add(bytes(buffer))
    assert len(outs) == 1
    return outs.pop()


def header_lines(out: bytes) -> list[bytes]:
    header, _ = split_message(out)
    return header[:-4].split(b"\r\n")


def received_with(
    *,
    helo: str | None = "helo.example",
    peer_ip: str | None = "127.0.0.1",
    hostname: str = "relay.example.com",
    protocol: str = "ESMTPSA",
    queue_id: str = "abc",
    when: datetime = WHEN,
) -> str:
    return format_received(
        helo=helo,
        peer_ip=peer_ip,
        hostname=hostname,
        protocol=protocol,
        queue_id=queue_id,
        when=when,
    )


# --- split_message ----------------------------------------------------------------------------


def test_split_normal_message() -> None:
    data = b"Subject: hi\r\nTo: a@b.example\r\n\r\nline 1\r\n\r\nline 3\r\n"
    header, body = split_message(data)
    assert header == b"Subject: hi\r\nTo: a@b.example\r\n\r\n"
    assert body == b"line 1\r\n\r\nline 3\r\n"


def test_split_without_blank_line_is_all_header() -> None:
    data = b"Subject: hi\r\nTo: a@b.example\r\n"
    assert split_message(data) == (data, b"")


def test_split_leading_blank_line_gives_empty_header_block() -> None:
    assert split_message(b"\r\nSubject: not a header\r\n") == (b"", b"Subject: not a header\r\n")


def test_split_empty_data() -> None:
    assert split_message(b"") == (b"", b"")


@pytest.mark.parametrize(
    "data",
    [
        b"Hello there: friend\r\n\r\nmore\r\n",  # whitespace before the colon
        b"just text\r\n",
        b" Subject: continuation first\r\n\r\nx\r\n",
        b"From nobody Mon Nov 23 01:02:03 2026\r\nSubject: x\r\n\r\nbody\r\n",  # mbox From_ line
        b": empty name\r\n\r\nbody\r\n",
    ],
)
def test_split_first_line_not_a_header_means_all_body(data: bytes) -> None:
    assert split_message(data) == (b"", data)


def test_split_accepts_obsolete_space_before_colon() -> None:
    data = b"Subject : hi\r\n\r\nbody\r\n"
    assert split_message(data) == (b"Subject : hi\r\n\r\n", b"body\r\n")


# --- read_header_facts ------------------------------------------------------------------------


def test_facts_of_a_complete_message() -> None:
    data = msg(
        b'From: "Name" <App@Example.COM>',
        b"Message-ID: <x@y.example>",
        b"Date: " + DATE.encode(),
        b"Idempotency-Key:   order-42  ",
    )
    assert read_header_facts(data) == HeaderFacts(
        from_addresses=("App@example.com",),
        has_message_id=True,
        has_date=True,
        idempotency_key="order-42",
        header_bytes=data.index(b"\r\n\r\n") + 4,
    )


def test_facts_of_a_message_without_those_headers() -> None:
    facts = read_header_facts(msg(b"Subject: hi"))
    assert facts.from_addresses == ()
    assert facts.has_message_id is False
    assert facts.has_date is False
    assert facts.idempotency_key is None


def test_from_keeps_local_part_case_and_lowercases_domain() -> None:
    facts = read_header_facts(msg(b"From: MiXeD.Case@Sub.EXAMPLE.Org"))
    assert facts.from_addresses == ("MiXeD.Case@sub.example.org",)


def test_from_all_headers_and_addresses_in_order() -> None:
    data = msg(
        b"From: b@two.example, First <a@one.example>",
        b"Subject: x",
        b"from: c@three.example",
    )
    assert read_header_facts(data).from_addresses == (
        "b@two.example",
        "a@one.example",
        "c@three.example",
    )


@pytest.mark.parametrize(
    "value",
    [
        b"=?utf-8?q?Caf=C3=A9?= <a@example.com>",
        b"=?utf-8?b?RG9lLCBKb2hu?= <a@example.com>",  # decodes to "Doe, John"
        b"=?iso-8859-1?q?M=FCller=2C_Hans?= <a@example.com>",
        b"=?utf-8?q?broken <a@example.com>",
        b"=?bogus-charset?q?x?= <a@example.com>",
    ],
)
def test_from_encoded_word_display_names_do_not_break_parsing(value: bytes) -> None:
    assert read_header_facts(msg(b"From: " + value)).from_addresses == ("a@example.com",)


def test_from_folded_header() -> None:
    data = msg(b"From: Some Name", b"\t<some@Example.com>,", b"  other@example.net")
    assert read_header_facts(data).from_addresses == ("some@example.com", "other@example.net")


def test_from_quoted_local_part_stays_quoted() -> None:
    data = msg(b'From: "john doe"@Example.com')
    assert read_header_facts(data).from_addresses == ('"john doe"@example.com',)


def test_from_group_syntax_is_skipped() -> None:
    data = msg(b"From: Team: a@x.example, b@y.example;, solo@z.example")
    assert read_header_facts(data).from_addresses == ("solo@z.example",)


def test_from_empty_group_yields_nothing() -> None:
    assert read_header_facts(msg(b"From: undisclosed-recipients:;")).from_addresses == ()


def test_from_header_with_garbage_entries_yields_nothing() -> None:
    """Invalid entries make the whole header untrustworthy (see the spoofing test below)."""
    data = msg(b"From: x@y.example, junk junk, @nolocal, z@w.example")
    assert read_header_facts(data).from_addresses == ()


@pytest.mark.parametrize(
    "value",
    [b"root", b"<<<>>>", b"a@", b"(" * 5000, b'"unterminated <a@b.example>', b""],
)
def test_from_unparseable_yields_nothing(value: bytes) -> None:
    assert read_header_facts(msg(b"From: " + value)).from_addresses == ()


def test_from_unparseable_header_does_not_hide_a_later_one() -> None:
    data = msg(b"From: a@", b"From: ok@example.com")
    assert read_header_facts(data).from_addresses == ("ok@example.com",)


def test_from_with_8bit_display_name() -> None:
    latin1 = msg(b"From: J\xf6rg <joerg@Example.com>")
    utf8 = msg("From: Jörg <joerg@Example.com>".encode())
    assert read_header_facts(latin1).from_addresses == ("joerg@example.com",)
    assert read_header_facts(utf8).from_addresses == ("joerg@example.com",)


def test_from_with_undecodable_bytes_in_the_address_is_skipped() -> None:
    data = msg(b"From: j\xf6rg@example.com, ok@example.com")
    assert read_header_facts(data).from_addresses == ("ok@example.com",)


def test_from_utf8_address_is_kept() -> None:
    data = msg("From: jörg@BÜCHER.example".encode())
    assert read_header_facts(data).from_addresses == ("jörg@bücher.example",)


def test_from_huge_header_is_not_parsed() -> None:
    # 2,000 addresses: parsing them with the stdlib would take a noticeable fraction of a second.
    value = b", ".join(b"user%d@example.com" % i for i in range(2000))
    started = time.perf_counter()
    facts = read_header_facts(msg(b"From: " + value))
    assert facts.from_addresses == ()
    assert time.perf_counter() - started < 0.5


def test_facts_ignore_header_lookalikes_in_the_body() -> None:
    body = b"From: a@example.com\r\nMessage-ID: <b@c>\r\nDate: " + DATE.encode() + b"\r\n"
    facts = read_header_facts(msg(b"Subject: x", body=body + b"Idempotency-Key: k\r\n"))
    assert facts == HeaderFacts((), False, False, None, len(b"Subject: x\r\n\r\n"), subject="x")


def test_facts_subject_is_decoded_and_one_line() -> None:
    facts = read_header_facts(msg(b"Subject: =?utf-8?q?Caf=C3=A9?= order\r\n\tnumber 7", body=b"x\r\n"))
    assert facts.subject == "Café order number 7"
    assert read_header_facts(msg(b"X-Other: 1", body=b"x\r\n")).subject is None
    assert read_header_facts(msg(b"Subject: =?bogus?q?x?=", body=b"x\r\n")).subject == "=?bogus?q?x?="


def test_facts_header_names_are_case_insensitive() -> None:
    data = msg(b"FROM: a@example.com", b"MESSAGE-ID: <x@y>", b"date: x", b"IDEMPOTENCY-KEY: k1")
    assert read_header_facts(data) == HeaderFacts(
        ("a@example.com",), True, True, "k1", len(data) - len(b"Hello.\r\n")
    )


def test_facts_blank_message_id_and_date_do_not_count() -> None:
    facts = read_header_facts(msg(b"Message-ID:   ", b"Date:", b"Subject: x"))
    assert facts.has_message_id is False
    assert facts.has_date is False


def test_facts_similar_names_do_not_count() -> None:
    facts = read_header_facts(
        msg(b"X-Message-ID: <a@b>", b"Resent-Date: " + DATE.encode(), b"Idempotency-Keys: k")
    )
    assert (facts.has_message_id, facts.has_date, facts.idempotency_key) == (False, False, None)


def test_idempotency_key_folded_is_unfolded_and_stripped() -> None:
    facts = read_header_facts(msg(b"Idempotency-Key: \t", b" abc-123 \t"))
    assert facts.idempotency_key == "abc-123"


def test_idempotency_key_first_header_wins() -> None:
    facts = read_header_facts(msg(b"Idempotency-Key: first", b"Idempotency-Key: second"))
    assert facts.idempotency_key == "first"


def test_idempotency_key_blank_is_kept_for_the_pipeline_to_refuse() -> None:
    assert read_header_facts(msg(b"Idempotency-Key:  ")).idempotency_key == ""
    assert read_header_facts(msg(b"Subject: x")).idempotency_key is None


def test_idempotency_key_utf8_kept_and_invalid_bytes_replaced() -> None:
    assert read_header_facts(msg("Idempotency-Key: ключ".encode())).idempotency_key == "ключ"
    assert read_header_facts(msg(b"Idempotency-Key: k\xff")).idempotency_key == "k\ufffd"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0),
        (b"\r\nbody\r\n", 2),
        (b"not a header\r\n\r\nbody\r\n", 0),
        (b"Subject: x\r\nTo: y\r\n", 19),
        (b"Subject: x", 10),
        (b"Subject: x\r\n\r\nbody\r\n", 14),
    ],
)
def test_header_bytes(data: bytes, expected: int) -> None:
    assert read_header_facts(data).header_bytes == expected


def test_facts_without_headers() -> None:
    data = b"From: is not here because the first line is text\r\n"
    facts = read_header_facts(b"plain text\r\n" + data)
    assert facts == HeaderFacts((), False, False, None, 0)


# --- prepare_for_relay_in_place ------------------------------------------------------------------------


def test_prepare_exact_output_for_a_simple_message() -> None:
    data = msg(b"From: a@example.com", b"To: b@example.net", b"Subject: hi")
    assert prepare(data) == (
        RECEIVED_LINE
        + b"From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\n"
        + MSGID_LINE
        + DATE_LINE
        + b"\r\nHello.\r\n"
    )


def test_prepare_keeps_existing_message_id_and_date() -> None:
    data = msg(b"Date: Sun, 1 Nov 2026 00:00:00 +0100", b"Subject: hi", b"message-id: <own@x>")
    assert prepare(data) == RECEIVED_LINE + data


def test_prepare_adds_only_the_missing_one() -> None:
    with_id = msg(b"Message-ID: <own@x>")
    with_date = msg(b"Date: Sun, 1 Nov 2026 00:00:00 +0100")
    assert prepare(with_id) == RECEIVED_LINE + b"Message-ID: <own@x>\r\n" + DATE_LINE + (
        b"\r\nHello.\r\n"
    )
    assert prepare(with_date) == (
        RECEIVED_LINE + b"Date: Sun, 1 Nov 2026 00:00:00 +0100\r\n" + MSGID_LINE + b"\r\nHello.\r\n"
    )


def test_prepare_replaces_blank_message_id_and_date() -> None:
    out = prepare(msg(b"Message-ID: ", b"Subject: x", b"Date:"))
    assert out == RECEIVED_LINE + b"Subject: x\r\n" + MSGID_LINE + DATE_LINE + b"\r\nHello.\r\n"


def test_prepare_received_is_first_even_before_existing_received() -> None:
    data = msg(b"Received: from earlier.example by mx.example; Sun, 1 Nov 2026 00:00:00 +0000")
    assert header_lines(prepare(data))[:2] == [
        RECEIVED_LINE[:-2],
        b"Received: from earlier.example by mx.example; Sun, 1 Nov 2026 00:00:00 +0000",
    ]


def test_prepare_removes_folded_bcc_entirely() -> None:
    data = msg(
        b"To: a@example.com",
        b"Bcc: hidden1@example.com,",
        b" hidden2@example.com,",
        b"\thidden3@example.com",
        b"Subject: x",
    )
    out = prepare(data)
    assert b"hidden" not in out
    assert header_lines(out)[1:3] == [b"To: a@example.com", b"Subject: x"]


@pytest.mark.parametrize("name", [b"Bcc", b"BCC", b"bcc", b"bCc", b"Bcc ", b"Bcc\t"])
def test_prepare_removes_bcc_whatever_its_case(name: bytes) -> None:
    out = prepare(msg(b"Subject: x", name + b": secret@example.com"))
    assert b"secret" not in out
    assert b"Subject: x\r\n" in out


def test_prepare_removes_every_bcc_header() -> None:
    data = msg(b"Bcc: s1@example.com", b"To: a@example.com", b"BCC: s2@example.com", b"bcc:")
    out = prepare(data)
    assert b"s1@" not in out
    assert b"s2@" not in out
    assert header_lines(out) == [RECEIVED_LINE[:-2], b"To: a@example.com", *_added()]


def test_prepare_keeps_headers_that_only_start_with_bcc() -> None:
    data = msg(b"Bcc-Something: keep", b"X-Bcc: keep2", b"Bccx: keep3", b"Bcc: drop")
    out = prepare(data)
    assert header_lines(out) == [
        RECEIVED_LINE[:-2],
        b"Bcc-Something: keep",
        b"X-Bcc: keep2",
        b"Bccx: keep3",
        *_added(),
    ]


def test_prepare_removes_idempotency_key_by_default() -> None:
    out = prepare(msg(b"Idempotency-Key: key-7f3e", b"  folded-part", b"Subject: x"))
    assert b"key-7f3e" not in out
    assert b"folded-part" not in out
    assert b"Subject: x\r\n" in out


def test_prepare_custom_remove_list_is_case_insensitive_and_replaces_the_default() -> None:
    data = msg(b"X-Secret: s", b"  more", b"Bcc: b@example.com", b"x-secret: t")
    out = prepare(data, remove=("X-SECRET",))
    assert header_lines(out) == [RECEIVED_LINE[:-2], b"Bcc: b@example.com", *_added()]


def test_prepare_removing_message_id_gets_ours_instead() -> None:
    out = prepare(msg(b"Message-ID: <client@x>"), remove=("message-id",))
    assert b"<client@x>" not in out
    assert MSGID_LINE in out


def test_prepare_keeps_folded_continuations_of_kept_headers() -> None:
    data = msg(b"Subject: a long", b"  subject line", b"Bcc: x@example.com", b"To: t@example.com")
    assert header_lines(prepare(data))[1:4] == [
        b"Subject: a long",
        b"  subject line",
        b"To: t@example.com",
    ]


def test_prepare_stray_line_in_header_block_is_kept_and_ends_a_removed_field() -> None:
    data = msg(b"Bcc: x@example.com", b"not a field", b"Subject: s")
    assert header_lines(prepare(data))[1:3] == [b"not a field", b"Subject: s"]


def test_prepare_leaves_header_lookalikes_in_the_body() -> None:
    body = b"Bcc: x@example.com\r\nIdempotency-Key: k\r\n\r\nMessage-ID: <b@c>\r\n"
    data = msg(b"Subject: s", body=body)
    out = prepare(data)
    assert out.endswith(b"\r\n\r\n" + body)
    assert MSGID_LINE in out  # the body's Message-ID does not count as the message's


def test_prepare_keeps_8bit_header_bytes_unchanged() -> None:
    data = msg(b"Subject: Gr\xfc\xdfe \xff\xfe", "To: Jörg <j@example.com>".encode(), b"Bcc: \xe9")
    out = prepare(data)
    assert b"Subject: Gr\xfc\xdfe \xff\xfe\r\nTo: J\xc3\xb6rg <j@example.com>\r\n" in out
    assert b"\xe9" not in out


def test_prepare_message_without_headers() -> None:
    data = b"Just some text: with a colon\r\nBcc: stays@example.com\r\n"
    assert prepare(data) == RECEIVED_LINE + MSGID_LINE + DATE_LINE + b"\r\n" + data


def test_prepare_message_with_leading_blank_line() -> None:
    data = b"\r\nBcc: body@example.com\r\n"
    assert prepare(data) == RECEIVED_LINE + MSGID_LINE + DATE_LINE + data


def test_prepare_empty_data() -> None:
    assert prepare(b"") == RECEIVED_LINE + MSGID_LINE + DATE_LINE + b"\r\n"


def test_prepare_header_block_without_body() -> None:
    data = b"Subject: s\r\nBcc: b@example.com\r\n"
    assert prepare(data) == RECEIVED_LINE + b"Subject: s\r\n" + MSGID_LINE + DATE_LINE + b"\r\n"


def test_prepare_header_block_without_final_crlf_gets_one() -> None:
    assert prepare(b"Subject: s") == (
        RECEIVED_LINE + b"Subject: s\r\n" + MSGID_LINE + DATE_LINE + b"\r\n"
    )


def test_prepare_bcc_as_last_header_without_blank_line() -> None:
    data = b"Subject: s\r\nBcc: a@example.com,\r\n b@example.com\r\n"
    assert prepare(data) == (RECEIVED_LINE + b"Subject: s\r\n" + MSGID_LINE + DATE_LINE + b"\r\n")


@pytest.mark.parametrize("argument", ["received", "message_id", "date"])
@pytest.mark.parametrize("bad", ["x\r\nBcc: y", "x\ny", "x\ry", "", "caf\u00e9", "x\x00y"])
def test_prepare_rejects_values_that_would_break_the_header(argument: str, bad: str) -> None:
    values = {"received": RECEIVED, "message_id": MSGID, "date": DATE, argument: bad}
    with pytest.raises(ValueError):
        prepare_for_relay_in_place(
            bytearray(msg(b"Subject: s")),
            received=values["received"],
            message_id=values["message_id"],
            date=values["date"],
        )


def test_prepare_output_lines_are_all_crlf() -> None:
    out = prepare(msg(b"Subject: s", b" folded", b"Bcc: b", body=b""))
    assert re.search(rb"[^\r]\n|\r[^\n]", out) is None
    assert out.endswith(b"\r\n\r\n")


def test_prepare_ten_megabyte_body_is_passed_through_identically() -> None:
    line = b"Bcc: body-line@example.com and some filler to make the line longer.......\r\n"
    body = (line * (10 * 1024 * 1024 // len(line) + 1))[: 10 * 1024 * 1024 - 2] + b"\r\n"
    data = msg(b"From: a@example.com", b"Bcc: secret@example.com", body=body)
    out = prepare(data)
    assert len(out) - len(body) == len(RECEIVED_LINE + b"From: a@example.com\r\n\r\n") + len(
        MSGID_LINE + DATE_LINE
    )
    assert out[len(out) - len(body) :] == body
    assert b"secret" not in out[: len(out) - len(body)]


def test_prepare_in_place_copies_no_body() -> None:
    body = b"x" * (10 * 1024 * 1024) + b"\r\n"
    tracemalloc.start()
    try:
        data = bytearray(b"\r\n" + msg(b"Subject: s", b"Bcc: hidden@example.com", body=body))
        tracemalloc.reset_peak()
        out = prepare_for_relay_in_place(data, 2, received=RECEIVED, message_id=MSGID, date=DATE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out is data and out.endswith(body) and out.startswith(RECEIVED_LINE)
    assert b"hidden@" not in out[:200]
    # the buffer itself, grown for the longer header; a copy of the body would double the peak
    assert peak < 1.3 * len(body)


def test_read_header_facts_does_not_copy_the_body() -> None:
    data = msg(b"From: a@example.com", body=b"x" * (10 * 1024 * 1024))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        read_header_facts(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def _added() -> list[bytes]:
    return [MSGID_LINE[:-2], DATE_LINE[:-2]]


header_name = st.sampled_from(
    ["Subject", "To", "Bcc", "BCC", "bcc", "Bcc-Other", "X-Bcc", "Idempotency-Key", "Cc"]
)
header_value = st.binary(max_size=30).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b""))
field = st.tuples(header_name, header_value, st.lists(header_value, max_size=2))
body_bytes = st.lists(
    st.binary(max_size=20).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b"")),
    max_size=5,
).map(lambda lines: b"".join(line + b"\r\n" for line in lines))


@settings(max_examples=300, deadline=None)
@given(fields=st.lists(field, min_size=1, max_size=6), body=body_bytes)
def test_prepare_property_removes_exactly_bcc_and_keeps_the_rest(
    fields: list[tuple[str, bytes, list[bytes]]], body: bytes
) -> None:
    lines: list[bytes] = []
    expected_kept: list[bytes] = []
    for name, value, continuations in fields:
        field_lines = [name.encode() + b":" + value] + [b" " + c for c in continuations]
        lines += field_lines
        if name.lower() not in ("bcc", "idempotency-key"):
            expected_kept += field_lines
    out = prepare(msg(*lines, body=body))
    assert (
        out
        == b"".join(line + b"\r\n" for line in [RECEIVED_LINE[:-2], *expected_kept, *_added()])
        + b"\r\n"
        + body
    )


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_property_read_header_facts_never_raises_and_split_is_consistent(data: bytes) -> None:
    crlf_only = data.replace(b"\r", b"").replace(b"\n", b"\r\n")
    facts = read_header_facts(crlf_only)
    header, body = split_message(crlf_only)
    assert facts.header_bytes == len(crlf_only) - len(body)
    assert crlf_only.endswith(body)
    assert crlf_only.startswith(header)
    for address in facts.from_addresses:
        address.encode("utf-8")
    out = prepare(crlf_only)
    assert out.endswith(body)


@settings(max_examples=500, deadline=None)
@given(value=st.text(alphabet=st.sampled_from(list('<>@,;:"()\\[]. \t=?abQé')), max_size=40))
def test_property_from_parsing_never_raises(value: str) -> None:
    facts = read_header_facts(msg(b"From: " + value.encode("utf-8")))
    assert all("@" in address for address in facts.from_addresses)


# --- format_received --------------------------------------------------------------------------


def test_format_received_example() -> None:
    value = format_received(
        helo="helo.example",
        peer_ip="127.0.0.1",
        hostname="relay.example.com",
        protocol="ESMTPSA",
        queue_id="abc",
        when=WHEN,
    )
    assert value == RECEIVED


def test_format_received_ipv6_literal() -> None:
    value = received_with(peer_ip="2001:DB8:0:0::1")
    assert value.startswith("from helo.example ([IPv6:2001:db8::1]) by relay.example.com ")


def test_format_received_ipv4_mapped_ipv6_shows_ipv4() -> None:
    value = received_with(peer_ip="::ffff:192.0.2.7")
    assert value.startswith("from helo.example ([192.0.2.7]) by ")


def test_format_received_ipv6_scope_id_is_dropped() -> None:
    value = received_with(peer_ip="fe80::1%eth0")
    assert "([IPv6:fe80::1])" in value


def test_format_received_without_helo_or_peer() -> None:
    assert received_with(helo=None, peer_ip=None) == (
        "from unknown by relay.example.com with ESMTPSA id abc; Mon, 23 Nov 2026 01:02:03 +0000"
    )
    assert received_with(helo=None).startswith("from unknown ([127.0.0.1]) ")
    assert received_with(helo="").startswith("from unknown ([127.0.0.1]) ")


def test_format_received_sanitizes_helo() -> None:
    helo = "evil (x)\r\nBcc: y;\\ caf\u00e9\x00[1.2.3.4]"
    value = received_with(helo=helo)
    assert value == (
        "from evil??x???Bcc:?y???caf??[1.2.3.4] ([127.0.0.1]) by relay.example.com"
        " with ESMTPSA id abc; Mon, 23 Nov 2026 01:02:03 +0000"
    )
    assert value.isascii()


def test_format_received_truncates_a_huge_helo() -> None:
    value = received_with(helo="a" * 10_000)
    assert "a" * 255 + " (" in value
    assert "a" * 256 not in value


def test_format_received_keeps_the_time_zone_offset_and_drops_microseconds() -> None:
    when = datetime(2026, 1, 5, 23, 4, 5, 999_999, tzinfo=timezone(timedelta(hours=-5)))
    assert received_with(when=when).endswith("; Mon, 05 Jan 2026 23:04:05 -0500")


def test_format_received_rejects_naive_datetime() -> None:
    with pytest.raises(ValueError):
        received_with(when=datetime(2026, 11, 23, 1, 2, 3))


@pytest.mark.parametrize(
    "override",
    [
        {"hostname": "relay.example.com\r\nBcc: x"},
        {"hostname": ""},
        {"protocol": "ESMTP SA"},
        {"protocol": "ESMTP;"},
        {"queue_id": "a b"},
        {"queue_id": "abc\n"},
        {"peer_ip": "not-an-ip"},
    ],
)
def test_format_received_rejects_invalid_arguments(override: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        received_with(**override)


def test_format_received_output_is_usable_by_prepare_for_relay_in_place() -> None:
    received = received_with(helo="x\r\ny", peer_ip="::1")
    assert "\r" not in received
    assert "\n" not in received
    out = prepare_for_relay_in_place(bytearray(msg(b"Subject: s")), received=received, message_id=MSGID,
                                     date=DATE)
    assert out.startswith(b"Received: from x??y ([IPv6:::1]) by relay.example.com ")


def test_from_header_with_invalid_syntax_yields_no_address() -> None:
    """A From: the parser flags as invalid could show another address in a mail client: trust none."""
    data = b"From: a@evil.com)<b@victim.com>\r\nTo: x@y.test\r\n\r\nbody\r\n"
    assert read_header_facts(data).from_addresses == ()


def test_from_header_with_obsolete_but_common_syntax_is_kept() -> None:
    """'John Q. Public' is obsolete syntax (a period in a phrase) but common and unambiguous."""
    data = b"From: John Q. Public <john@example.com>\r\n\r\nbody\r\n"
    assert read_header_facts(data).from_addresses == ("john@example.com",)


_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


@settings(max_examples=500)
@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"a", b".", b"\x00", b"\xff", b"\n\r", b"\r\r\n"]),
                max_size=40).map(b"".join))
def test_bare_cr_or_lf_is_the_plain_definition(data: bytes) -> None:
    """A CR not followed by LF, or an LF not preceded by CR; bytes and bytearray alike."""
    expected = _BARE.search(data) is not None
    assert has_bare_cr_or_lf(data) is expected
    assert has_bare_cr_or_lf(bytearray(data)) is expected
