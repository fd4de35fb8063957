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


class Attachmentlike(Protocol):
    """A file to attach: its sanitized name, decoded bytes, MIME type, Content-ID and disposition."""

    @property
    def filename(self) -> str: ...

    @property
    def content(self) -> bytes: ...

    @property
    def content_type(self) -> str: ...

    @property
    def content_id(self) -> str | None: ...

    @property
    def disposition(self) -> str: ...


_B64_LINE = 76  # RFC 2045: encoded lines of at most 76 characters
_B64_BLOCK_IN = 57 * 2048  # payload bytes encoded per step: 2048 whole lines (about 156 KB encoded)


def _param_header(name: str, value: str, param: str, filename: str) -> str:
    """A Content-Type/Content-Disposition line with a filename parameter; a non-ASCII or long name is
    written by the email package (RFC 2231 encoding and continuations)."""
    # escaped for the quoted-string either way: a quote in the name must not end it early (and
    # add parameters of its own) in the email package's rendering either
    quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
    if filename.isascii() and filename.isprintable():
        line = f'{value}; {param}="{quoted}"'
        if _fits(name, line):
            return f"{name}: {line}\r\n"
    return _rendered(name, f'{value}; {param}="{quoted}"')


class _Base64:
    """An attachment's payload as it will be written: base64 in CRLF-separated 76-character lines.
    Nothing is encoded until write_into, which encodes a block at a time straight into the message
    buffer: the payload is copied once, decoded bytes to message, with no whole encoded copy between."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        encoded = 4 * (-(-len(data) // 3))
        self.size = encoded + 2 * max(-(-encoded // _B64_LINE) - 1, 0)

    def write_into(self, out: bytearray, at: int) -> int:
        """Write the lines into out from at; the offset after them."""
        data, total = self.data, len(self.data)
        for start in range(0, total, _B64_BLOCK_IN):
            encoded = binascii.b2a_base64(data[start:start + _B64_BLOCK_IN], newline=False)
            piece = b"\r\n".join(map(encoded.__getitem__, map(
                slice, range(0, len(encoded), _B64_LINE), range(_B64_LINE, len(encoded) + _B64_LINE, _B64_LINE))))
            if start + _B64_BLOCK_IN < total:
                piece += b"\r\n"
            out[at:at + len(piece)] = piece
            at += len(piece)
        return at


Piece = bytes | _Base64


def _wrapped_base64(data: bytes) -> bytes:
    """data as the base64 lines an attachment part carries (CRLF between lines, none at the end)."""
    lines = _Base64(data)
    out = bytearray(lines.size)
    lines.write_into(out, 0)
    return bytes(out)


def _attachment_part(att: Attachmentlike) -> list[Piece]:
    """Headers, blank line and base64 body lines of one attachment (no trailing boundary)."""
    head = _param_header("Content-Type", att.content_type, "name", att.filename)
    head += "Content-Transfer-Encoding: base64\r\n"
    head += _param_header("Content-Disposition", att.disposition, "filename", att.filename)
    if att.content_id:
        head += f"Content-ID: <{att.content_id}>\r\n"
    return [head.encode("ascii") + b"\r\n", _Base64(att.content), b"\r\n"]


def _multipart(subtype: str, parts: Sequence[list[Piece]], *, mime_version: bool) -> list[Piece]:
    """A multipart entity (headers included) as a list of pieces; parts are piece lists."""
    boundary = "=" * 15 + str(random.randrange(sys.maxsize)).zfill(_BOUNDARY_DIGITS) + "=="
    # as _boundary: never a line of the parts; base64 lines cannot hold a run of '=' (at most two
    # end the last line), so only the other pieces are searched
    while any(boundary.encode() in piece for part in parts for piece in part if isinstance(piece, bytes)):
        boundary = "=" * 15 + str(random.randrange(sys.maxsize)).zfill(_BOUNDARY_DIGITS) + "=="
    version = "MIME-Version: 1.0\r\n" if mime_version else ""
    out: list[Piece] = [
        f'{version}Content-Type: multipart/{subtype};\r\n boundary="{boundary}"\r\n\r\n'.encode()]
    for i, part in enumerate(parts):
        out.append(f"--{boundary}\r\n".encode() if i == 0 else f"\r\n--{boundary}\r\n".encode())
        out.extend(part)
    out.append(f"\r\n--{boundary}--\r\n".encode())
    return out


def _body_parts(text: str | None, html: str | None) -> list[Piece]:
    """The text/html body as one entity without MIME-Version (nested inside a multipart)."""
    if text and html:
        first, second = _part(text, "plain", mime_version=False), _part(html, "html", mime_version=False)
        return _multipart("alternative", [[first.encode("ascii")], [second.encode("ascii")]],
                          mime_version=False)
    return [_part(html or text or "", "html" if html else "plain", mime_version=False).encode("ascii")]


def message_with_attachments(headers: Sequence[str], *, text: str | None, html: str | None,
                             attachments: Sequence[Attachmentlike]) -> bytearray:
    """The whole message with files: multipart/mixed of the body and the attachments; inline parts
    (a Content-ID) beside an html body go with it in multipart/related, so cid: references resolve.
    The message is one buffer of the exact size, each payload encoded straight into it."""
    inline = [a for a in attachments if a.content_id and html]
    files = [a for a in attachments if not (a.content_id and html)]
    if text and html and inline:
        # alternative(text, related(html, inline...)): a text-only reader never sees the images
        related = _multipart("related", [[_part(html, "html", mime_version=False).encode("ascii")],
                                         *map(_attachment_part, inline)], mime_version=False)
        body = _multipart("alternative", [[_part(text, "plain", mime_version=False).encode("ascii")], related],
                          mime_version=False)
    elif inline:
        body = _multipart("related", [_body_parts(text, html), *map(_attachment_part, inline)],
                          mime_version=False)
    else:
        body = _body_parts(text, html)
    pieces: list[Piece]
    if files:
        pieces = _multipart("mixed", [body, *map(_attachment_part, files)], mime_version=True)
    else:
        pieces = [b"MIME-Version: 1.0\r\n", *body]
    pieces.insert(0, "".join(headers).encode("ascii"))
    out = bytearray(sum(p.size if isinstance(p, _Base64) else len(p) for p in pieces))
    at = 0
    for piece in pieces:
        if isinstance(piece, _Base64):
            at = piece.write_into(out, at)
        else:
            out[at:at + len(piece)] = piece
            at += len(piece)
    assert at == len(out)
    return out


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
