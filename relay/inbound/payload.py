"""The bodies an app receives: normalized JSON in CloudMailin's shape, or the message as message/rfc822.

JSON: `envelope`, `headers` (lower-case names with underscores, a repeated header as a list), `plain`,
`html`, `reply_plain` and `attachments` (content base64). The MIME structure is read with the standard
`email` package's modern API (policy.default); a message it cannot make sense of still reaches the app,
its header block as headers and its body as `plain`.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from dataclasses import dataclass
from email import errors, policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

from relay import hygiene

log = logging.getLogger(__name__)

_PARSER = BytesParser(policy=policy.default)
_NAME_CHARS = re.compile(r"[^a-z0-9]+")
_MULTIPART_DEFECTS = (errors.NoBoundaryInMultipartDefect, errors.StartBoundaryNotFoundDefect,
                      errors.CloseBoundaryNotFoundDefect, errors.MultipartInvariantViolationDefect)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the sending server told the listener, per route."""

    mail_from: str
    recipients: tuple[str, ...]
    helo: str
    remote_ip: str
    tls: bool

    def as_json(self) -> dict[str, Any]:
        """CloudMailin's envelope keys."""
        return {"to": self.recipients[0] if self.recipients else "", "recipients": list(self.recipients),
                "from": self.mail_from, "helo_domain": self.helo, "remote_ip": self.remote_ip,
                "tls": self.tls}


def header_key(name: str) -> str:
    """`Message-ID` -> `message_id` (CloudMailin's normalized names)."""
    return _NAME_CHARS.sub("_", name.lower()).strip("_") or "_"


def _unfold(value: str) -> str:
    return " ".join(value.split())


def _headers(items: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    headers: dict[str, str | list[str]] = {}
    for name, value in items:
        key = header_key(name)
        earlier = headers.get(key)
        if earlier is None:
            headers[key] = value
        elif isinstance(earlier, list):
            earlier.append(value)
        else:
            headers[key] = [earlier, value]
    return headers


def _decoded_headers(message: Message) -> list[tuple[str, str]]:
    """Header values with encoded words decoded; a header the parser chokes on stays as sent."""
    items: list[tuple[str, str]] = []
    for name, raw in message.raw_items():
        text = raw if isinstance(raw, str) else str(raw)
        if "=?" not in text and text.isascii():
            # nothing to decode: the policy's structured parse (2/3 of a small message's cost) would
            # give back the same text
            items.append((name, _unfold(text)))
            continue
        try:
            value = str(message.policy.header_fetch_parse(name, raw))
        except Exception:  # the stdlib header parsers raise assorted errors on garbage
            value = text
        items.append((name, _unfold(value)))
    return items


def _raw_headers(data: bytes | bytearray) -> list[tuple[str, str]]:
    """Header fields straight from the bytes, for a message the parser could not take."""
    block, _body = hygiene.split_message(bytes(data))
    items: list[tuple[str, str]] = []
    for line in block.decode("utf-8", "replace").split("\r\n"):
        if line[:1] in (" ", "\t") and items:
            items[-1] = (items[-1][0], items[-1][1] + " " + line.strip())
        elif ":" in line:
            name, _, value = line.partition(":")
            items.append((name.strip(), value.strip()))
    return items


def _text_of(part: EmailMessage) -> str:
    """A text part's content as str; an unknown or lying charset falls back to UTF-8 with replacement."""
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, ValueError, KeyError, AssertionError):
        pass
    payload = part.get_payload(decode=True)
    return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


# Lines that start the quoted part of a reply, as common mail clients write them: Gmail, Apple Mail and
# Thunderbird ("On ... wrote:"), Outlook and Yahoo ("-----Original Message-----", a rule of underscores,
# a "From:" block), French and German clients, and plain ">" quoting. One pattern, tried once per line.
_QUOTE_START = re.compile(
    r"On .{0,300}wrote:\s*$|(?i:-{2,}\s*Original Message\s*-{2,})|_{20,}\s*$|From: .+$"
    r"|Le .{0,300}a écrit\s*:\s*$|Am .{0,300}schrieb .{0,300}:\s*$|>")
_WROTE = re.compile(r"On .{0,300}wrote:\s*$")


def reply_text(plain: str | None) -> str | None:
    """The new text of a reply, without the quoted message under it; None when no quote is found."""
    if not plain:
        return None
    lines = plain.replace("\r\n", "\n").split("\n")
    for index, line in enumerate(lines):
        stripped = line.strip()
        # "On <date>, <name>" and "wrote:" are often wrapped onto two lines
        if _QUOTE_START.match(stripped) or (
                stripped.startswith("On ") and index + 1 < len(lines)
                and _WROTE.match(f"{stripped} {lines[index + 1].strip()}")):
            reply = "\n".join(lines[:index]).strip()
            return reply or None
    return None


def _attachment(part: Message) -> dict[str, Any]:
    if part.get_content_type() == "message/rfc822" and part.is_multipart():
        inner = part.get_payload(0)
        content = inner.as_bytes() if isinstance(inner, Message) else b""
    else:
        decoded = part.get_payload(decode=True)
        content = decoded if isinstance(decoded, bytes) else b""
    return {
        "file_name": part.get_filename(),
        "content_type": part.get_content_type(),
        "size": len(content),
        "disposition": part.get_content_disposition() or "attachment",
        "content_id": _unfold(str(part["content-id"])) if part["content-id"] else None,
        "content": base64.b64encode(content).decode("ascii"),
    }


def _leaves(message: Message) -> list[Message]:
    """Every non-multipart part, in order; an attached message counts as one part."""
    if message.get_content_maintype() == "multipart":
        found: list[Message] = []
        # a multipart whose boundary never occurs has a str payload and no parts: its text is the body
        for sub in message.get_payload() if message.is_multipart() else []:
            if isinstance(sub, Message):
                found.extend(_leaves(sub))
        return found
    return [message]


def _parsed(data: bytes | bytearray) -> dict[str, Any]:
    message = _PARSER.parsebytes(data)
    assert isinstance(message, EmailMessage)
    plain_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    plain = _text_of(plain_part) if isinstance(plain_part, EmailMessage) else None
    html = _text_of(html_part) if isinstance(html_part, EmailMessage) else None
    broken = any(isinstance(d, _MULTIPART_DEFECTS) for part in message.walk() for d in part.defects)
    if plain is None and html is None and broken:
        # a multipart whose boundaries cannot be found: the app still gets what was sent
        plain = hygiene.split_message(bytes(data))[1].decode("utf-8", "replace")
    attachments = [_attachment(part) for part in _leaves(message)
                   if part is not plain_part and part is not html_part]
    return {"headers": _headers(_decoded_headers(message)), "plain": plain, "html": html,
            "reply_plain": reply_text(plain), "attachments": attachments}


def parse(data: bytes | bytearray) -> dict[str, Any]:
    """Everything of the JSON document but the envelope (the same for every route of a message)."""
    try:
        return _parsed(data)
    except Exception:  # a parser failure must not bounce the mail: the app gets the raw parts
        log.warning("inbound message did not parse; posting its raw header block and body", exc_info=True)
        plain = hygiene.split_message(bytes(data))[1].decode("utf-8", "replace")
        return {"headers": _headers(_raw_headers(data)), "plain": plain, "html": None,
                "reply_plain": reply_text(plain), "attachments": []}


def json_body(parsed: dict[str, Any], envelope: Envelope) -> bytes:
    """The normalized JSON document for one route's recipients."""
    document = {"envelope": envelope.as_json(), **parsed}
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def raw_headers(envelope: Envelope) -> dict[str, str]:
    """The envelope as request headers for the raw format (the body is the message itself)."""
    return {
        "Content-Type": "message/rfc822",
        "X-Relay-Envelope-From": envelope.mail_from,
        "X-Relay-Envelope-To": ", ".join(envelope.recipients),
        "X-Relay-Helo-Domain": envelope.helo,
        "X-Relay-Remote-Ip": envelope.remote_ip,
        "X-Relay-Tls": "true" if envelope.tls else "false",
    }
