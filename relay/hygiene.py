"""Header hygiene on raw message bytes: trace header, required fields, private-header removal."""

import functools
import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime
from email import errors, policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.utils import format_datetime
from typing import Any

from relay.addresses import ATEXT, addresses_in_text

_CRLF = b"\r\n"
_BLANK_LINE = b"\r\n\r\n"

# RFC 5322 ftext, then the obsolete optional WSP before the colon (obs-optional): Postfix and
# Python's parser both accept "Bcc : x" as a Bcc field, so removal must too or it would leak.
_FIELD_START = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")

# The stdlib address parser is quadratic (and recursive) in the header length; From values past
# this many characters in total are not parsed so one crafted header cannot stall the relay.
_FROM_PARSE_BUDGET = 8192

# 255 is the longest domain RFC 5321 allows; anything longer from a client is noise.
_MAX_HELO = 255
_HOSTNAME = re.compile(r"[A-Za-z0-9_.-]+")
_PROTOCOL = re.compile(r"[A-Za-z0-9-]+")
_ATOM = re.compile(rf"[{ATEXT}]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]+")


@dataclass(frozen=True, slots=True)
class HeaderFacts:
    """What the pipeline needs to know about a message's header block."""

    from_addresses: tuple[str, ...]
    has_message_id: bool
    has_date: bool
    idempotency_key: str | None
    # The body's offset: a leading blank line counts although the header block it ends is empty.
    header_bytes: int
    # address-shaped words in the From: display names ('"ceo@bank.com" <app@example.com>')
    from_display_addresses: tuple[str, ...] = ()
    subject: str | None = None  # decoded (RFC 2047), for the log row


@dataclass(frozen=True, slots=True)
class _Field:
    # None marks a line in the header block that is neither a field nor a continuation.
    name: str | None
    lines: tuple[bytes, ...]

    def value(self) -> bytes:
        # Unfolding is removing the CRLFs, which the line split already did.
        return b"".join(self.lines).partition(b":")[2].strip(b" \t")


def _boundary(data: bytes | bytearray) -> tuple[int, int]:
    # Returns (end of header block, start of body) as offsets so callers can slice the body at
    # most once; they differ only when a leading blank line separates an empty header block.
    if data.startswith(_CRLF):
        return 0, 2
    if not _FIELD_START.match(data):
        # No header section at all (e.g. a client sending bare text): treating its first
        # paragraph as headers would delete or insert lines inside what the sender wrote.
        return 0, 0
    end = data.find(_BLANK_LINE)
    if end < 0:
        return len(data), len(data)
    return end + 4, end + 4


def _parse_fields(data: bytes | bytearray, header_end: int) -> list[_Field]:
    # Drop the blank line's CRLF so every remaining line, including the last, splits cleanly.
    if data.endswith(_BLANK_LINE, 0, header_end):
        header_end -= 2
    lines = bytes(data[:header_end]).split(_CRLF)  # the header block only: small
    if lines[-1] == b"":
        lines.pop()
    fields: list[tuple[str | None, list[bytes]]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1].append(line)
            continue
        match = _FIELD_START.match(line)
        name = match.group(1).decode("ascii").lower() if match else None
        fields.append((name, [line]))
    return [_Field(name, tuple(field_lines)) for name, field_lines in fields]


def _has_value(fields: list[_Field], name: str) -> bool:
    # A blank field is as good as none: its value can't serve as an id or a date.
    return any(field.name == name and field.value() for field in fields)


def _from_addresses(fields: list[_Field]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the From: addr-specs, the address-shaped words of their display names)."""
    addresses: list[str] = []
    shown: list[str] = []
    budget = _FROM_PARSE_BUDGET
    for field in fields:
        if field.name != "from":
            continue
        # UTF-8 is legal in headers (RFC 6532); other 8-bit bytes only need to survive parsing.
        value = field.value().decode("utf-8", "surrogateescape")
        budget -= len(value)
        if budget < 0:
            break
        found, names = _from_value_addresses(value)
        addresses.extend(found)
        shown.extend(names)
    return tuple(addresses), tuple(shown)


@functools.lru_cache(maxsize=4096)
def _from_value_addresses(value: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The authorized-checkable addr-specs of one From: value and the addresses its display names
    show (pure: transactional mail repeats it)."""
    try:
        header = policy.default.header_factory("from", value)
        groups = header.groups
    except Exception:
        # On some garbage the stdlib parser raises (IndexError, TypeError, AttributeError,
        # RecursionError, ...) instead of recording a defect; that header yields nothing.
        return (), ()
    if any(isinstance(d, errors.InvalidHeaderDefect) for d in header.defects):
        # what a mail client shows may differ from what we parsed (a@evil)<b@victim>): trust neither
        return (), ()
    addresses: list[str] = []
    shown: list[str] = []
    for group in groups:
        if group.display_name is not None:
            # RFC 6854 group syntax in From: names no mailbox that can be held responsible.
            continue
        for address in group.addresses:
            addr_spec = _addr_spec(address.username, address.domain)
            if addr_spec is not None:
                addresses.append(addr_spec)
                shown.extend(addresses_in_text(address.display_name or ""))
    return tuple(addresses), tuple(shown)


def _addr_spec(username: str, domain: str) -> str | None:
    if not username or not domain:
        return None
    # Address re-quotes a local part that needs it, e.g. "john doe"@example.com.
    addr_spec = Address(username=username, domain=domain.lower()).addr_spec
    # Lone surrogates stand for undecodable bytes: no caller could store or compare them.
    if any("\udc80" <= char <= "\udcff" for char in addr_spec):
        return None
    return addr_spec


def _idempotency_key(fields: list[_Field]) -> str | None:
    """The first Idempotency-Key: header's value as sent, blank or not: the pipeline refuses one it
    cannot honour (550 5.6.0, as the API does) rather than relay without the protection asked for."""
    for field in fields:
        if field.name == "idempotency-key":
            # undecodable bytes become U+FFFD, which the pipeline's printable-ASCII rule refuses
            return field.value().decode("utf-8", "replace")
    return None


def split_message(data: bytes) -> tuple[bytes, bytes]:
    """Split into (header block incl. its CRLF CRLF, body); no blank line means an empty body."""
    header_end, body_start = _boundary(data)
    return data[:header_end], data[body_start:]


def read_header_facts(data: bytes) -> HeaderFacts:
    """Facts about the header block: From addr-specs, Message-ID/Date presence, idempotency key."""
    header_end, body_start = _boundary(data)
    fields = _parse_fields(data, header_end)
    from_addresses, from_display_addresses = _from_addresses(fields)
    return HeaderFacts(
        from_addresses=from_addresses, from_display_addresses=from_display_addresses,
        has_message_id=_has_value(fields, "message-id"),
        has_date=_has_value(fields, "date"),
        idempotency_key=_idempotency_key(fields),
        header_bytes=body_start,
        subject=_subject(fields),
    )


_SUBJECT_CHARS = 998  # one RFC 5322 line: the log keeps no more


def _subject(fields: list[_Field]) -> str | None:
    """The first Subject: value, RFC 2047 words decoded; undecodable words are kept as sent."""
    for field in fields:
        if field.name == "subject":
            raw = field.value().decode("utf-8", "replace").strip()
            try:
                text = str(make_header(decode_header(raw)))
            except (HeaderParseError, UnicodeError, ValueError, LookupError):
                text = raw
            return " ".join(text.split())[:_SUBJECT_CHARS]
    return None


def _header_line(name: str, value: str, argument: str) -> bytes:
    # These values come from our own code, but a CR or LF in one would forge header fields.
    if not _HEADER_VALUE.fullmatch(value):
        raise ValueError(f"{argument} must be non-empty printable ASCII: {value!r}")
    return f"{name}: {value}".encode("ascii") + _CRLF


def header_section(data: bytes | bytearray, start: int = 0) -> bytes:
    """A copy of the header block of the message in data[start:], its blank line included: all
    that the header parsers look at (the whole message when it has no blank line)."""
    blank = data.find(_BLANK_LINE, start)
    return bytes(data[start:] if blank < 0 else data[start:blank + 4])


def has_bare_cr_or_lf(data: bytes | bytearray) -> bool:
    """Does some CR or LF stand outside a CRLF pair (RFC 5321 2.3.8)? Three counts, no copy."""
    crlf = data.count(_CRLF)
    return data.count(b"\n") != crlf or data.count(b"\r") != crlf


def relay_header_block(
    data: bytes | bytearray,
    *,
    received: str,
    message_id: str,
    date: str,
    remove: tuple[str, ...] = ("bcc", "resent-bcc", "idempotency-key"),
) -> tuple[bytes, int]:
    """The header block to relay (Received: on top, Message-ID/Date when missing, headers removed,
    ending in the blank line) and the offset in data where the body starts."""
    received_line = _header_line("Received", received, "received")
    message_id_line = _header_line("Message-ID", message_id, "message_id")
    date_line = _header_line("Date", date, "date")
    removed = {name.lower() for name in remove}

    header_end, body_start = _boundary(data)
    kept = [field for field in _parse_fields(data, header_end) if field.name not in removed]
    # Presence is judged after removal so a caller removing Message-ID or Date gets ours instead.
    add_message_id = not _has_value(kept, "message-id")
    add_date = not _has_value(kept, "date")
    # A blank field left beside the one we add would make the message carry two of them.
    dropped = {"message-id"} if add_message_id else set()
    if add_date:
        dropped.add("date")

    parts: list[bytes | memoryview] = [received_line]
    for field in kept:
        if field.name in dropped:
            continue
        for line in field.lines:
            parts += (line, _CRLF)
    if add_message_id:
        parts.append(message_id_line)
    if add_date:
        parts.append(date_line)
    parts.append(_CRLF)
    return b"".join(parts), body_start


def prepare_for_relay_in_place(data: bytearray, start: int = 0, **headers: Any) -> bytearray:
    """Message bytes to relay (relay_header_block's header block, then the body of the message in
    data[start:]), made in data itself: the first start bytes and the old header block are
    replaced; the body is not copied.

    For large messages this saves a second copy of the whole message while it is relayed
    (a front slice that grows reallocates in place; a front deletion would make it copy).
    """
    header, body_start = relay_header_block(header_section(data, start), **headers)
    data[:start + body_start] = header
    return data


def _sanitize_helo(helo: str | None) -> str:
    if helo is None:
        return "unknown"
    # Spaces, parentheses, ';' and '\' would let a client forge clauses, comments or the date
    # separator in the trace line; everything else outside printable ASCII is unreadable anyway.
    cleaned = "".join(
        char if "!" <= char <= "~" and char not in "();\\" else "?" for char in helo[:_MAX_HELO]
    )
    return cleaned or "unknown"


def _address_literal(peer_ip: str) -> str:
    address = ipaddress.ip_address(peer_ip)
    if isinstance(address, ipaddress.IPv6Address):
        # Dual-stack sockets report IPv4 clients as ::ffff:a.b.c.d; log what the client used.
        if address.ipv4_mapped is not None:
            return f"[{address.ipv4_mapped}]"
        # A scope id (fe80::1%eth0) is not valid in an RFC 5321 address literal.
        return f"[IPv6:{ipaddress.IPv6Address(int(address)).compressed}]"
    return f"[{address}]"


def format_received(
    *,
    helo: str | None,
    peer_ip: str | None,
    hostname: str,
    protocol: str,
    queue_id: str,
    when: datetime,
) -> str:
    """Value of a Received: trace header per RFC 5321 4.4, with the client's HELO sanitized."""
    if when.tzinfo is None or when.utcoffset() is None:
        # A naive time would be stamped with whatever zone the host happens to be in.
        raise ValueError("when must be timezone-aware")
    for argument, value, pattern in (
        ("hostname", hostname, _HOSTNAME),
        ("protocol", protocol, _PROTOCOL),
        ("queue_id", queue_id, _ATOM),
    ):
        if not pattern.fullmatch(value):
            raise ValueError(f"invalid {argument} for a Received header: {value!r}")
    from_domain = _sanitize_helo(helo)
    if peer_ip is not None:
        from_domain += f" ({_address_literal(peer_ip)})"
    # format_datetime, unlike strftime, does not localize day and month names.
    stamp = format_datetime(when)
    return f"from {from_domain} by {hostname} with {protocol} id {queue_id}; {stamp}"
