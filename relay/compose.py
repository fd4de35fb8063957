"""The API's send request: decode and validate the JSON body, then compose RFC 5322 bytes (pure)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.utils import format_datetime
from typing import Any

from relay import mime
from relay.addresses import is_valid_address
from relay.attachments import Attachment, AttachmentError, parse_attachments
from relay.domain import Extras
from relay.tags import TagError, Tags, parse_metadata, parse_tags, tags_json

FIELDS = ("from", "to", "cc", "bcc", "reply_to", "subject", "html", "text", "headers", "attachments",
          "tags", "metadata", "send_at", "unsubscribe_url")
MAX_SCHEDULE = timedelta(hours=72)  # how far ahead send_at may be
_UNSUBSCRIBE_URL = re.compile(r"https://[\x21-\x7e]{1,800}")  # RFC 8058: one-click needs HTTPS

# Extra headers may not replace what the relay writes or derives from the other fields, nor add
# identities the sender authorization does not cover (Sender:, Resent-*), nor the relay's private
# Idempotency-Key (the SMTP channel strips it; here it is refused so nothing is silently dropped).
RESERVED_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "reply-to", "subject", "date", "orig-date", "message-id", "sender",
    "mime-version", "return-path", "received", "idempotency-key",
})
RESERVED_PREFIXES = ("content-", "resent-")
MAX_HEADERS = 50
# One RFC 5322 line is 998 characters: a value this long still fits beside its name unfolded, so
# structured values (List-Unsubscribe URLs) are never mangled by re-folding.
MAX_HEADER_VALUE = 900
MAX_HEADER_NAME = 76
_MAX_SHOWN = 80  # how much of a bad value an error message quotes

_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 ftext
_MAILBOX = re.compile(r"\s*(?:(?P<name>[^<>]*?)\s*<(?P<angle>[^<>]*)>|(?P<bare>[^<>]*?))\s*")
# str.splitlines() breaks on these besides CR and LF; the email package folds with it
_LINE_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")

class RequestError(Exception):
    """The request body is not an acceptable send request; the text names the field."""


@dataclass(frozen=True, slots=True)
class Mailbox:
    """An address with an optional display name."""

    address: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A validated POST /v1/send body."""

    sender: Mailbox
    to: tuple[Mailbox, ...]
    cc: tuple[Mailbox, ...] = ()
    bcc: tuple[Mailbox, ...] = ()
    reply_to: tuple[Mailbox, ...] = ()
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Attachment, ...] = ()
    tags: Tags = ()
    metadata: str | None = None  # compact JSON of an object
    send_at: datetime | None = None  # scheduled delivery (UTC)
    unsubscribe_url: str | None = None
    # what the size limit counts (docs/contract.md: html + text in UTF-8 bytes, plus the decoded attachments)
    size: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        # once: a request reads it three times, and encoding 10 MB of text takes milliseconds
        object.__setattr__(self, "size", len((self.html or "").encode()) + len((self.text or "").encode())
                           + sum(len(a.content) for a in self.attachments))

    @property
    def recipients(self) -> tuple[str, ...]:
        """The envelope: to + cc + bcc addresses."""
        return tuple(m.address for m in (*self.to, *self.cc, *self.bcc))

    @property
    def has_body(self) -> bool:
        """True when there is html or text to send."""
        return bool(self.html or self.text)


def _shown(value: str) -> str:
    text = value if len(value) <= _MAX_SHOWN else value[:_MAX_SHOWN] + "..."
    return repr(text)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise RequestError(f"field {_shown(key)} is given more than once")
        seen[key] = value
    return seen


def decode_body(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; RequestError when it is not one."""
    doc = decode_json(body)
    if not isinstance(doc, dict):
        raise RequestError("the body must be a JSON object")
    return doc


def decode_json(body: bytes) -> Any:
    """The body as JSON (duplicate keys refused); RequestError when it is not JSON."""
    try:
        doc = json.loads(body, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise RequestError(f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, "
                           f"column {exc.colno})") from None
    except UnicodeDecodeError:
        raise RequestError("the body is not valid JSON: it must be UTF-8 encoded") from None
    except (ValueError, RecursionError):  # over-long numbers, absurd nesting
        raise RequestError("the body is not valid JSON") from None
    return doc


def _checked_text(field: str, value: str, *, header: bool) -> str:
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape
        raise RequestError(f"{field} is not valid Unicode text") from None
    if header and any(ch in _LINE_BREAKS or (ch < " " and ch != "\t") or ch == "\x7f" for ch in value):
        raise RequestError(f"{field} must not contain CR, LF or other control characters")
    if "\x00" in value:  # no valid message holds a NUL (RFC 5322 2.3); the SMTP channel refuses it too
        raise RequestError(f"{field} must not contain NUL characters")
    return value


def _mailbox(field: str, value: object) -> Mailbox:
    if not isinstance(value, str):
        raise RequestError(f"{field} must be a string")
    _checked_text(field, value, header=True)
    match = _MAILBOX.fullmatch(value)
    if match is None:
        raise RequestError(f"{field}: {_shown(value)} is not a valid email address")
    address = match["bare"] if match["bare"] is not None else match["angle"]
    name = (match["name"] or "").strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not is_valid_address(address):
        raise RequestError(f"{field}: {_shown(value)} is not a valid email address")
    return Mailbox(address, name)


def _mailboxes(doc: dict[str, Any], field: str, limit: int) -> tuple[Mailbox, ...]:
    value = doc.get(field)
    if value is None:
        return ()
    if isinstance(value, str):
        return (_mailbox(f"field {field!r}", value),)
    if not isinstance(value, list):
        raise RequestError(f"field {field!r} must be a string or a list of strings")
    if len(value) > limit:
        raise RequestError(f"more than {limit} recipients")
    return tuple(_mailbox(f"{field}[{i}]", item) for i, item in enumerate(value))


def _optional_text(doc: dict[str, Any], field: str, *, header: bool) -> str | None:
    value = doc.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"field {field!r} must be a string")
    return _checked_text(f"field {field!r}", value, header=header)


def _extra_headers(doc: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    value = doc.get("headers")
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise RequestError("field 'headers' must be an object of header names to strings")
    if len(value) > MAX_HEADERS:
        raise RequestError(f"field 'headers' may hold at most {MAX_HEADERS} headers")
    out: list[tuple[str, str]] = []
    for name, text in value.items():
        if len(name) > MAX_HEADER_NAME or not _HEADER_NAME.fullmatch(name):
            raise RequestError(f"headers: {_shown(name)} is not a valid header name")
        lowered = name.lower()
        if lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_PREFIXES):
            hint = ("; send it as an HTTP request header" if lowered == "idempotency-key"
                    else f"; use the {lowered.replace('-', '_')!r} field" if lowered.replace("-", "_") in FIELDS
                    else "")
            raise RequestError(f"headers: {name!r} cannot be set through 'headers'{hint}")
        if not isinstance(text, str):
            raise RequestError(f"headers[{name!r}] must be a string")
        _checked_text(f"headers[{name!r}]", text, header=True)
        if len(text) > MAX_HEADER_VALUE:
            raise RequestError(f"headers[{name!r}] is longer than {MAX_HEADER_VALUE} characters")
        out.append((name, text))
    return tuple(out)


def _send_at(doc: dict[str, Any], now: datetime) -> datetime | None:
    """send_at: an RFC 3339 time with its offset, at most 72 hours ahead; one already past means now."""
    value = doc.get("send_at")
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError("field 'send_at' must be an RFC 3339 time string")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise RequestError(f"field 'send_at': {_shown(value)} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise RequestError("field 'send_at' needs a UTC offset (Z or +hh:mm)")
    when = when.astimezone(UTC)
    if when > now + MAX_SCHEDULE:
        raise RequestError("field 'send_at' may be at most 72 hours ahead")
    return when if when > now else None


def _unsubscribe_url(doc: dict[str, Any], headers: tuple[tuple[str, str], ...]) -> str | None:
    value = doc.get("unsubscribe_url")
    if value is None:
        return None
    if not isinstance(value, str) or not _UNSUBSCRIBE_URL.fullmatch(value) or ">" in value:
        raise RequestError("field 'unsubscribe_url' must be an https:// URL (RFC 8058), at most 808 characters")
    if any(name.lower() in ("list-unsubscribe", "list-unsubscribe-post") for name, _ in headers):
        raise RequestError("give 'unsubscribe_url' or List-Unsubscribe headers, not both")
    return value


def parse_request(doc: dict[str, Any], *, max_recipients: int, now: datetime | None = None) -> SendRequest:
    """Validate a decoded body; RequestError names the first field that is wrong."""
    unknown = [key for key in doc if key not in FIELDS]
    if unknown:
        raise RequestError(f"unknown field {_shown(unknown[0])}; expected some of {', '.join(FIELDS)}")
    if doc.get("from") is None:
        raise RequestError("field 'from' is required")
    sender = _mailbox("field 'from'", doc["from"])
    if doc.get("to") is None:
        raise RequestError("field 'to' is required")
    to = _mailboxes(doc, "to", max_recipients)
    if not to:
        raise RequestError("field 'to' needs at least one recipient")
    cc = _mailboxes(doc, "cc", max_recipients)
    bcc = _mailboxes(doc, "bcc", max_recipients)
    seen: set[str] = set()
    for box in (*to, *cc, *bcc):
        key = box.address.lower()
        if key in seen:
            raise RequestError(f"recipient {box.address} appears more than once in to, cc and bcc")
        seen.add(key)
    headers = _extra_headers(doc)
    try:
        attachments = parse_attachments(doc.get("attachments"))
        tags, metadata = parse_tags(doc.get("tags")), parse_metadata(doc.get("metadata"))
    except (AttachmentError, TagError) as exc:
        raise RequestError(str(exc)) from None
    request = SendRequest(
        sender=sender, to=to, cc=cc, bcc=bcc,
        reply_to=_mailboxes(doc, "reply_to", max_recipients),
        subject=_optional_text(doc, "subject", header=True),
        html=_optional_text(doc, "html", header=False),
        text=_optional_text(doc, "text", header=False),
        headers=headers, attachments=attachments, tags=tags, metadata=metadata,
        send_at=_send_at(doc, now or datetime.now(UTC)), unsubscribe_url=_unsubscribe_url(doc, headers),
    )
    if not request.has_body:
        raise RequestError("the message has no body: give 'html', 'text' or both")
    return request


def extras(request: SendRequest) -> Extras:
    """What the log row keeps besides the envelope: tags, metadata, send_at."""
    return Extras(tags_json(request.tags), request.metadata, request.send_at)


def fingerprint(request: SendRequest) -> bytes:
    """SHA-256 of what the request asks for, so that equal requests match however they were spelled."""
    fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
    del fields["size"]  # derived from html and text; keys claimed before it was a field still match
    for name in ("attachments", "tags", "metadata", "send_at", "unsubscribe_url"):
        if not fields[name]:
            del fields[name]  # absent: keys claimed before these fields existed still match
    for name in ("sender", "to", "cc", "bcc", "reply_to"):
        value = fields[name]
        fields[name] = dataclasses.asdict(value) if isinstance(value, Mailbox) else [
            dataclasses.asdict(box) for box in value]
    if "attachments" in fields:  # the bytes by their digest
        fields["attachments"] = [
            {**{f: getattr(a, f) for f in ("filename", "content_type", "content_id", "disposition")},
             "sha256": hashlib.sha256(a.content).hexdigest()} for a in request.attachments]
    if "send_at" in fields:
        fields["send_at"] = request.send_at.isoformat() if request.send_at else None
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def _raw_value(name: str, value: str) -> str:
    # ASCII goes out as given (it fits one line); anything else as RFC 2047 encoded words.
    if value.isascii():
        return value
    return Header(value, "utf-8", header_name=name).encode(linesep="\r\n")


def compose(request: SendRequest, *, hostname: str, received: str | None = None,
            now: datetime | None = None) -> bytes | bytearray:
    """The message as RFC 5322 bytes with CRLF line endings; Bcc stays out of the header."""
    headers = []
    if received:
        # one line, as the SMTP channel writes its own (RFC 5322 allows 998 characters)
        headers.append(mime.raw_header("Received", received))
    headers.append(mime.address_header("From", (request.sender,)))
    headers.append(mime.address_header("To", request.to))
    if request.cc:
        headers.append(mime.address_header("Cc", request.cc))
    if request.reply_to:
        headers.append(mime.address_header("Reply-To", request.reply_to))
    if request.subject is not None:
        headers.append(mime.text_header("Subject", request.subject))
    headers.append(mime.text_header("Date", format_datetime(now or datetime.now(UTC))))
    headers.append(mime.text_header("Message-ID", f"<{uuid.uuid4().hex}@{hostname}>", mime.PLAIN_MESSAGE_ID))
    headers.extend(mime.raw_header(name, _raw_value(name, value)) for name, value in request.headers)
    if request.unsubscribe_url:  # RFC 8058 one-click: the receiver POSTs to the URL
        headers.append(mime.raw_header("List-Unsubscribe", f"<{request.unsubscribe_url}>"))
        headers.append(mime.raw_header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    if request.attachments:
        return mime.message_with_attachments(headers, text=request.text, html=request.html,
                                             attachments=request.attachments)
    return mime.message(headers, text=request.text, html=request.html)


def doc_size(doc: object) -> int:
    """About how many characters of content a decoded send body (or a list of them) holds: what
    decides whether the work on it runs inline or in a worker thread (channels/http.py _cpu)."""
    if isinstance(doc, list):
        return sum(doc_size(item) for item in doc)
    if not isinstance(doc, dict):
        return 0
    size = sum(len(v) for k in ("html", "text") if isinstance(v := doc.get(k), str))
    attachments = doc.get("attachments")
    if isinstance(attachments, list):
        size += sum(len(a["content"]) for a in attachments
                    if isinstance(a, dict) and isinstance(a.get("content"), str | list))
    return size
