"""The API's MIME bytes written directly: what the email package writes, without its per-header parse.

EmailMessage parses every header it is given into a token tree and renders the tree back when the
message is flattened: about 0.6 ms for a plain two-header message, a third of an API send's CPU.
Here a header whose value is plain ASCII that fits one line is written as it stands, which is what
the email package writes for it too; any other header (non-ASCII, quoting, folding) is still
rendered by the email package's own header classes, one header at a time. Bodies are encoded with
the email package's own rules (7bit, quoted-printable or base64, chosen as set_content chooses).
tests/test_mime.py holds this byte for byte against EmailMessage.
"""

from __future__ import annotations

import binascii
import random
import re
import sys
from collections.abc import Sequence
from email import policy, quoprimime
from email.headerregistry import Address
from typing import Protocol

from relay.addresses import ATEXT

# SMTP line endings; 7bit, so that a non-ASCII body travels as quoted-printable or base64 and any
# upstream takes it without 8BITMIME; raw headers (set_raw) are emitted as given, never refolded.
POLICY = policy.SMTP.clone(cte_type="7bit", refold_source="none")
_MAX_LINE = POLICY.max_line_length or 78

_PLAIN_TEXT = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")  # no encoded words, checked apart
_PLAIN_NAME = re.compile(rf"[{ATEXT}]+(?: [{ATEXT}]+)*")
_PLAIN_ADDRESS = re.compile(rf"[{ATEXT}]+(?:\.[{ATEXT}]+)*@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
PLAIN_MESSAGE_ID = re.compile(r"<[0-9a-f]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?>")
_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))  # as email.generator makes them


class Mailboxlike(Protocol):
    """An address with an optional display name."""

    @property
    def address(self) -> str: ...

    @property
    def name(self) -> str: ...


def _fits(name: str, value: str) -> bool:
    return len(name) + 2 + len(value) <= _MAX_LINE


def _rendered(name: str, value: object) -> str:
    """The header as EmailMessage writes it: parsed by the email package's class for it, folded."""
    return str(POLICY.fold(name, POLICY.header_factory(name, value)))


def text_header(name: str, value: str, plain: re.Pattern[str] = _PLAIN_TEXT) -> str:
    """One header line (CRLF-terminated) with a text value (Subject, Date, Message-ID...)."""
    if plain.fullmatch(value) and "=?" not in value and _fits(name, value):
        return f"{name}: {value}\r\n"
    return _rendered(name, value)


def address_header(name: str, mailboxes: Sequence[Mailboxlike]) -> str:
    """One header line (CRLF-terminated) listing mailboxes (From, To, Cc, Reply-To)."""
    if any(not box.address.isascii() for box in mailboxes):
        return _utf8_address_header(name, mailboxes)
    parts = []
    for box in mailboxes:
        if not _PLAIN_ADDRESS.fullmatch(box.address) or (
                box.name and (not _PLAIN_NAME.fullmatch(box.name) or "=?" in box.name)):
            break
        parts.append(f"{box.name} <{box.address}>" if box.name else box.address)
    else:
        value = ", ".join(parts)
        if _fits(name, value):
            return f"{name}: {value}\r\n"
    return _rendered(name, [Address(display_name=box.name, addr_spec=box.address) for box in mailboxes])


def _utf8_address_header(name: str, mailboxes: Sequence[Mailboxlike]) -> str:
    """An address header holding internationalized addresses (RFC 6532): UTF-8 as is, display
    names quoted, one mailbox per folded line (the message goes out with SMTPUTF8)."""
    parts = []
    for box in mailboxes:
        if box.name:
            quoted = box.name.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'"{quoted}" <{box.address}>')
        else:
            parts.append(box.address)
    return f"{name}: " + ",\r\n ".join(parts) + "\r\n"


def raw_header(name: str, value: str) -> str:
    """A header written exactly as given (already encoded and folded), as EmailMessage.set_raw."""
    return f"{name}: " + "\r\n".join(value.splitlines()) + "\r\n"


def _encode_text(text: str) -> tuple[str, str]:
    """(Content-Transfer-Encoding, payload with LF line ends) for UTF-8 text, by the rules of
    email.contentmanager's set_content for str: 7bit when ASCII in short lines, else whichever of
    quoted-printable and base64 is shorter on the first ten lines."""
    lines = text.encode().splitlines()
    if max((len(x) for x in lines), default=0) <= _MAX_LINE:
        try:
            return "7bit", (b"\n".join(lines) + b"\n").decode("ascii")
        except UnicodeDecodeError:
            pass
    sniff = b"\r\n".join(lines[:10]) + b"\r\n"
    sniff_qp = quoprimime.body_encode(sniff.decode("latin-1"), _MAX_LINE)
    if len(sniff_qp) > len(binascii.b2a_base64(sniff)):
        data = b"\r\n".join(lines) + b"\r\n"
        step = _MAX_LINE // 4 * 3
        return "base64", "".join(binascii.b2a_base64(data[i:i + step]).decode("ascii")
                                 for i in range(0, len(data), step))
    if len(lines) <= 10:
        return "quoted-printable", sniff_qp
    return "quoted-printable", quoprimime.body_encode((b"\n".join(lines) + b"\n").decode("latin-1"), _MAX_LINE)


def _part(text: str, subtype: str, *, mime_version: bool) -> str:
    """Content headers, blank line and encoded body of one text part."""
    cte, payload = _encode_text(text)
    version = "MIME-Version: 1.0\r\n" if mime_version else ""
    return (f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n'
            f"{version}\r\n" + payload.replace("\n", "\r\n"))


def _boundary(parts: str) -> str:
    while True:
        boundary = "=" * 15 + str(random.randrange(sys.maxsize)).zfill(_BOUNDARY_DIGITS) + "=="
        if boundary not in parts:
            return boundary


def message(headers: Sequence[str], *, text: str | None, html: str | None) -> bytes:
    """The whole message: the header lines given, then the body as EmailMessage.set_content (and
    add_alternative for html beside text) would write it."""
    head = "".join(headers)
    if text and html:
        # add_alternative gives the html part a MIME-Version of its own; kept for byte equality
        first, second = _part(text, "plain", mime_version=False), _part(html, "html", mime_version=True)
        boundary = _boundary(first + second)
        body = (f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'
                f"--{boundary}\r\n{first}\r\n--{boundary}\r\n{second}\r\n--{boundary}--\r\n")
    elif html:
        body = _part(html, "html", mime_version=True)
    else:
        body = _part(text or "", "plain", mime_version=True)
    # UTF-8 only where an internationalized address put it (RFC 6532); ASCII otherwise
    return (head + body).encode("utf-8")
