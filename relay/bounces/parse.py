"""Read a message sent to a bounce address: DSNs, feedback reports, auto-replies and plain bounces."""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import EmailPolicy
from typing import Any

from relay.upstream.classify import FailureCode, classify, classify_report


class Kind(enum.StrEnum):
    """What a finding means for the message it names."""

    BOUNCED = "bounced"
    DELAYED = "delivery_delayed"
    COMPLAINED = "complained"
    AUTO_REPLIED = "auto_replied"
    UNPARSEABLE = "unparseable"


class Source(enum.StrEnum):
    """The form the message was recognised as (for logs and metrics)."""

    DSN = "dsn"
    ARF = "arf"
    JMRP = "jmrp"
    AUTO_REPLY = "auto-reply"
    PLAIN_BOUNCE = "plain-bounce"
    OTHER = "other"
    UNPARSEABLE = "unparseable"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a bounce-address message says about one recipient (or about the message)."""

    kind: Kind
    source: Source
    failure_code: FailureCode | None = None
    recipient: str | None = None  # Final-Recipient / Original-Rcpt-To / the address a plain bounce names
    status: str | None = None  # RFC 3463 code, e.g. "5.1.1"
    diagnostic: str | None = None  # Diagnostic-Code, the reply a plain bounce quotes, or why unparseable
    remote_mta: str | None = None
    feedback_type: str | None = None  # ARF Feedback-Type: abuse, fraud, virus, other...


_HARD_BOUNCES = {FailureCode.NO_SUCH_USER, FailureCode.BAD_DOMAIN, FailureCode.ADDRESS_GONE}


def suppresses(finding: Finding) -> bool:
    """Whether a finding puts its recipient on the suppression list (docs/events.md, "Suppression list"):
    a complaint, or a bounce with 2001, 2002, 2004 or a permanent (5.x.x) 1xxx code."""
    if finding.kind is Kind.COMPLAINED:
        return True
    code = finding.failure_code
    if finding.kind is not Kind.BOUNCED or code is None:
        return False
    if code in _HARD_BOUNCES:
        return True
    # A plain bounce may quote no status; it reported a failure, so it is taken as permanent.
    return 1000 <= code < 2000 and (finding.status or "5").startswith("5")


def parse(raw: bytes) -> list[Finding]:
    """Findings for a message sent to a bounce address; never raises.

    An empty list means nothing to record (a DSN saying delivered/relayed/expanded, a feedback
    report of type not-spam or auth-failure).
    """
    try:
        return _parse(raw)
    # The inbound listener answers 250 whatever we find (no backscatter), so no input may
    # escape as an exception: a parser or charset bug becomes a counted "unparseable".
    except Exception as exc:  # RecursionError (absurd nesting) included
        return [_unparseable(f"{type(exc).__name__}: {exc}")]


def _unparseable(why: str) -> Finding:
    return Finding(Kind.UNPARSEABLE, Source.UNPARSEABLE, diagnostic=why[:200])


class _BoundedPolicy(EmailPolicy):
    """policy.default, except that a header value is cut before it is parsed: parsing a 250 KB
    Subject takes the email package 14 s."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        """The parsed header, from at most _MAX_HEADER characters of its value."""
        return super().header_fetch_parse(name, value[:_MAX_HEADER])


_POLICY = _BoundedPolicy()  # policy.default is EmailPolicy() with no options


def _bounded(raw: bytes) -> bytes:
    """The start of the message, enough for any report, cut before the email package's cost
    grows without bound (policy.default spends ~1 ms per MIME part: 5,000 parts are 4 s)."""
    raw = raw[:_MAX_INPUT]
    at = -1
    for _ in range(_MAX_BOUNDARIES):
        at = raw.find(b"\n--", at + 1)
        if at < 0:
            return raw
    return raw[:at + 1]


def _parse(raw: bytes) -> list[Finding]:
    # DSN and ARF put the report first and the original last (RFC 6522), so the start suffices.
    msg = BytesParser(policy=_POLICY).parsebytes(_bounded(raw))
    if not msg.keys():
        return [_unparseable("no header fields")]
    parts = list(_leaf_parts(msg))
    notice = _notice(parts)
    found = _dsn(parts)
    if found is None:
        found = _feedback(msg, parts)
    if found is None:
        if _strong_auto_reply(msg):
            found = [Finding(Kind.AUTO_REPLIED, Source.AUTO_REPLY, FailureCode.AUTO_REPLY)]
        elif _looks_like_bounce(msg, notice):
            found = _plain_bounce(msg, notice)
        elif _weak_auto_reply(msg):
            found = [Finding(Kind.AUTO_REPLIED, Source.AUTO_REPLY, FailureCode.AUTO_REPLY)]
        else:
            found = [Finding(Kind.BOUNCED, Source.OTHER, FailureCode.INFO_OTHER)]
    return found


# --- reading the MIME tree with care for broken input ---

_MAX_INPUT = 128 * 1024
_MAX_HEADER = 4096  # characters of one header value that are parsed
_MAX_BOUNDARIES = 100  # lines starting "--": MIME boundaries, or dashes in text
_MAX_PARTS = 200
_MAX_BLOCKS = 101  # DSN field blocks: the per-message one and 100 recipients (VERP sends one per transaction)
_MAX_DEPTH = 20
_MAX_TEXT = 64 * 1024
_LEAF_TYPES = {
    "message/delivery-status", "message/global-delivery-status", "message/feedback-report",
    "message/rfc822", "message/global", "message/rfc822-headers", "text/rfc822-headers",
    "message/global-headers",
}


# A leaf part with its content type, read once (policy.default re-parses the header per call).
_Part = tuple[str, Message]


def _leaf_parts(msg: Message) -> Iterator[_Part]:
    """Parts that hold content, in order, without descending into quoted messages."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack and seen < _MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        ctype = part.get_content_type()
        payload = part.get_payload()
        if ctype not in _LEAF_TYPES and isinstance(payload, list) and depth < _MAX_DEPTH:
            stack.extend((sub, depth + 1) for sub in reversed(payload) if isinstance(sub, Message))
        else:
            yield ctype, part


def _header(msg: Message, name: str) -> str:
    """A header's value, or "" when absent or too malformed for the email package to read."""
    try:
        value = msg.get(name)
    except Exception:  # policy.default parses on access; a broken value must not lose the rest
        return ""
    return "" if value is None else str(value).strip()


def _fields(msg: Message) -> dict[str, str]:
    """A field block as lowercase name -> first value."""
    fields: dict[str, str] = {}
    for name in msg:
        fields.setdefault(name.lower(), _header(msg, name))
    return fields


def _text(part: Message) -> str:
    """A part's decoded text; unknown charsets and broken encodings degrade, never raise."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return ""
    if not isinstance(payload, bytes):
        payload = part.get_payload()
        return payload[:_MAX_TEXT] if isinstance(payload, str) else ""
    try:
        charset = part.get_content_charset() or "utf-8"
    except Exception:  # a Content-Type too broken to read its parameters
        charset = "utf-8"
    try:
        return payload[:_MAX_TEXT].decode(charset, errors="replace")
    except (LookupError, ValueError):
        return payload[:_MAX_TEXT].decode("utf-8", errors="replace")


def _quoted_message(part: Message) -> Message | None:
    """The headers of an included original (message/rfc822 or text/rfc822-headers)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload[0] if payload and isinstance(payload[0], Message) else None
    try:
        raw = part.get_payload(decode=True)
    except Exception:
        return None
    if not isinstance(raw, bytes):
        return None
    return BytesHeaderParser(policy=_POLICY).parsebytes(raw[:_MAX_TEXT])


_QUOTED_TYPES = _LEAF_TYPES - {
    "message/delivery-status", "message/global-delivery-status", "message/feedback-report"}


def _quoted_messages(parts: list[_Part]) -> Iterator[Message]:
    for ctype, part in parts:
        if ctype in _QUOTED_TYPES:
            quoted = _quoted_message(part)
            if quoted is not None:
                yield quoted


# --- delivery status notifications (RFC 3464) ---

_STATUS = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")
_FIELD = re.compile(r"^([!-9;-~]+)[ \t]*:[ \t]*(.*)$")
_ACTIONS = {"failed": Kind.BOUNCED, "delayed": Kind.DELAYED}
_NOTHING = {"delivered", "relayed", "expanded"}


def _blocks_from_text(text: str) -> list[dict[str, str]]:
    """Field blocks separated by blank lines, with folded lines unfolded."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if len(blocks) >= _MAX_BLOCKS:
            return blocks
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, ""
        elif line[0] in " \t" and last:
            current[last] += " " + line.strip()
        elif match := _FIELD.match(line):
            last = match.group(1).lower()
            current.setdefault(last, match.group(2).strip())
    if current:
        blocks.append(current)
    return blocks


def _status_blocks(part: Message) -> list[dict[str, str]]:
    """The field blocks of a delivery-status part, however the email package split it."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _blocks_from_text(_text(part))
    if _header(part, "content-transfer-encoding").lower() == "base64":
        # The email package splits delivery-status into blocks before any decoding, so an
        # encoded report arrives as header-less blocks of base64: join and decode them here.
        bodies = [sub.get_payload() for sub in payload if isinstance(sub, Message)]
        encoded = "".join(body for body in bodies if isinstance(body, str))
        try:
            decoded = base64.b64decode(encoded[:_MAX_TEXT * 2], validate=False)
        except (binascii.Error, ValueError):
            return []
        return _blocks_from_text(decoded.decode("utf-8", errors="replace"))
    blocks: list[dict[str, str]] = []
    for sub in payload[:_MAX_BLOCKS]:
        if not isinstance(sub, Message):
            continue
        blocks.append(_fields(sub))
        body = sub.get_payload()  # global-delivery-status: the recipient blocks follow as body
        if isinstance(body, str) and body.strip():
            blocks.extend(_blocks_from_text(body[:_MAX_TEXT]))
    return [b for b in blocks[:_MAX_BLOCKS] if b]


def _typed_value(value: str) -> str | None:
    """The address of "rfc822; <user@example.com>" (type prefix and brackets removed)."""
    value = value.split(";", 1)[1] if ";" in value else value
    value = value.strip().strip("<>").strip()
    return value or None


def _dsn(parts: list[_Part]) -> list[Finding] | None:
    """One finding per failed or delayed recipient block; None when there is no usable report."""
    reports = [part for ctype, part in parts if ctype.endswith("delivery-status")]
    if not reports:
        return None
    findings: list[Finding] = []
    recipients = 0
    for report in reports:
        blocks = _status_blocks(report)
        for block in blocks:
            if not _is_recipient_block(block):
                continue
            recipients += 1
            finding = _recipient_finding(block)
            if finding is not None:
                findings.append(finding)
    return findings if recipients else None


def _is_recipient_block(block: dict[str, str]) -> bool:
    return "final-recipient" in block or "original-recipient" in block or "action" in block


def _recipient_finding(block: dict[str, str]) -> Finding | None:
    status_match = _STATUS.search(block.get("status", ""))
    status = status_match.group(0) if status_match else None
    words = block.get("action", "").lower().split()
    action = words[0] if words else ""
    if action not in _ACTIONS and action not in _NOTHING and status:
        # A report without a usable Action: the Status class says what happened.
        action = {"5": "failed", "4": "delayed"}.get(status[0], "delivered")
    kind = _ACTIONS.get(action)
    if kind is None:
        return None
    diagnostic = " ".join(block.get("diagnostic-code", "").split()) or None
    return Finding(
        kind, Source.DSN, classify_report(status, diagnostic),
        recipient=_typed_value(block.get("final-recipient", "")) or _typed_value(
            block.get("original-recipient", "")),
        status=status, diagnostic=diagnostic,
        remote_mta=_typed_value(block.get("remote-mta", "")),
    )


# --- feedback reports (RFC 5965 ARF, and Microsoft's older JMRP form) ---

_NOT_COMPLAINTS = {"not-spam", "auth-failure"}
_JMRP_RECIPIENT = "X-HmXmrOriginalRecipient"


def _feedback(msg: Message, parts: list[_Part]) -> list[Finding] | None:
    """A complaint per reported recipient; None when the message is not a feedback report."""
    for ctype, part in parts:
        if ctype != "message/feedback-report":
            continue
        blocks = _status_blocks(part)
        fields = blocks[0] if blocks else {}
        feedback_type = (fields.get("feedback-type", "").split() or ["abuse"])[0].lower()
        if feedback_type in _NOT_COMPLAINTS:
            return []
        named = (_typed_value(v) for v in fields.get("original-rcpt-to", "").split(","))
        recipients: list[str | None] = [r for r in named if r] or [None]
        return [Finding(Kind.COMPLAINED, Source.ARF, recipient=r, feedback_type=feedback_type)
                for r in recipients]
    for quoted in _quoted_messages(parts):
        recipient = _header(quoted, _JMRP_RECIPIENT)
        if recipient:
            return [Finding(Kind.COMPLAINED, Source.JMRP, recipient=_typed_value(recipient),
                            feedback_type="abuse")]
    return None


# --- auto-replies (RFC 3834 and what mail systems actually send) ---

# Headers only auto-responders set: they outrank the bounce look-alike checks.
_STRONG_AUTO_HEADERS: dict[str, re.Pattern[str]] = {
    "x-autoreply": re.compile(r"^(?!no\b|false\b|0\b)", re.I),
    "x-autorespond": re.compile(r""),
    "x-autoreply-from": re.compile(r""),
    "x-mail-autoreply": re.compile(r""),
    "precedence": re.compile(r"^auto[_-]?reply\b", re.I),
    "x-autogenerated": re.compile(r"^reply\b", re.I),
    "x-apple-action": re.compile(r"^vacation\b", re.I),
    "x-post-messageclass": re.compile(r"autoresponder", re.I),
    "delivered-to": re.compile(r"^autoresponder\b", re.I),
    # Exchange and Outlook OOF replies carry no Auto-Submitted, but every inbox-rule reply has this.
    "x-ms-exchange-inbox-rules-loop": re.compile(r""),
}
# Postfix, Exim and Exchange mark their bounces "Auto-Submitted: auto-replied" too, so this and
# the subject wordings count only for a message that does not look like a bounce.
_AUTO_SUBMITTED = re.compile(r"^auto-(?:replied|notified)\b", re.I)
_AUTO_SUBJECT = re.compile(
    r"^\s*(?:automatic reply|auto(?:matic)?[ -]?(?:reply|response|antwort)|autoreply|out of (?:the )?office"
    r"|vacation|abwesenheit\w*|r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica"
    r"|automatisch antwoord|autosvar|automaattinen vastaus)\b", re.I)


def _strong_auto_reply(msg: Message) -> bool:
    for name, pattern in _STRONG_AUTO_HEADERS.items():
        value = _header(msg, name)
        if (value or name in msg) and pattern.search(value):
            return True
    return False


def _weak_auto_reply(msg: Message) -> bool:
    return bool(_AUTO_SUBMITTED.search(_header(msg, "auto-submitted"))
                or _AUTO_SUBJECT.search(_header(msg, "subject")))


# --- plain-text bounces (qmail, old Exchange, Exim without DSN, Yahoo, old Gmail) ---

_BOUNCE_FROM = re.compile(r"\b(?:mailer-daemon|postmaster|mail delivery (?:sub)?system)\b", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"^\s*(?:undeliver|undelivered mail|delivery status notification|failure notice|mail delivery failed"
    r"|returned mail|delivery fail|non[- ]?deliver|mail system error|delivery notification"
    r"|(?:warning: )?could not send message|message not delivered|unzustellbar|non remis|no entregado"
    r"|mail delivery system)", re.I)
_BOUNCE_BODY = re.compile(
    r"qmail-send program|this is the mail system at|delivery has failed to these recipients"
    r"|could not be delivered to one or more|wasn't able to deliver your message"
    r"|did not reach the following recipient|delivery to the following recipients? failed"
    r"|unable to deliver your message to the following", re.I)
_BOUNCE_HEADERS = ("x-failed-recipients", "x-ms-exchange-message-is-ndr", "x-ms-embedded-report")
# Where the notice ends and the quoted original begins; tried on short lines only (a marker line
# is short, and a regex over a 64 KiB line of dashes would backtrack for minutes).
_QUOTE_START = re.compile(
    r"\s*(?:-{2,}.*?(?:original message|copy of the message|message follows|original headers"
    r"|headers? of (?:the )?original|returned message|below this line)"
    r"|original message headers:)", re.I)
_MARKER_LINE = 200
_ADDRESS = r"[^\s<>@:;,()\"]+@[A-Za-z0-9][A-Za-z0-9.-]*[A-Za-z0-9]"
# A line naming a recipient: Postfix's and qmail's "<address>: reason..." (the reason may follow
# on the same line), the address alone (Exim, Gmail, Exchange), or Exchange 2003's "address on DATE".
_ADDRESS_LINE = re.compile(
    rf"^[ \t]*(?:<({_ADDRESS})>:|<?({_ADDRESS})>?:?(?:[ \t]+on[ \t].*)?[ \t]*$)", re.M)
# An SMTP reply code (not part of a longer number, an IP address or a date); Yahoo writes "554:".
_REPLY_CODE = re.compile(r"(?<![\d.])([245]\d\d)(?=[ \t:-])")
_QMAIL_STATUS = re.compile(r"\(#([245]\.\d{1,3}\.\d{1,3})\)")


def _looks_like_bounce(msg: Message, notice: str) -> bool:
    if any(name in msg for name in _BOUNCE_HEADERS):
        return True
    if _BOUNCE_FROM.search(_header(msg, "from")) or _BOUNCE_SUBJECT.search(_header(msg, "subject")):
        return True
    return bool(_BOUNCE_BODY.search(notice[:4096]))


def _notice(parts: list[_Part]) -> str:
    """The bounce's own words: the first text part, up to where the quoted original begins."""
    for ctype, part in parts:
        if ctype.startswith("text/") and ctype != "text/rfc822-headers":
            text = _text(part)
            if ctype == "text/html":
                text = re.sub(r"<[^>]*>", " ", text)
            return _before_quote(text)
    return ""


def _before_quote(text: str) -> str:
    offset = 0
    for line in text.splitlines(keepends=True):
        if len(line) <= _MARKER_LINE and _QUOTE_START.match(line):
            return text[:offset]
        offset += len(line)
    return text


def _plain_bounce(msg: Message, notice: str) -> list[Finding]:
    """One bounce per named recipient, classified from the reply quoted for it."""
    segments = _segments(notice)
    named = [a.strip().strip("<>") for a in _header(msg, "x-failed-recipients").split(",")]
    recipients: list[str | None] = (
        [a for a in named if "@" in a] or [address for address, _ in segments.values()] or [None])
    findings = []
    for recipient in recipients[:_MAX_PARTS]:
        segment = segments.get(recipient.lower(), ("", notice))[1] if recipient else notice
        status, diagnostic, code = _diagnose(segment)
        findings.append(Finding(Kind.BOUNCED, Source.PLAIN_BOUNCE, code, recipient=recipient,
                                status=status, diagnostic=diagnostic))
    return findings


def _segments(notice: str) -> dict[str, tuple[str, str]]:
    """Lowercased address -> (address, the text after its line up to the next recipient line)."""
    lines = list(_ADDRESS_LINE.finditer(notice))
    segments: dict[str, tuple[str, str]] = {}
    for i, match in enumerate(lines):
        end = lines[i + 1].start() if i + 1 < len(lines) else len(notice)
        address = match.group(1) or match.group(2)
        segments.setdefault(address.lower(), (address, notice[match.end():end]))
    return segments


def _diagnose(text: str) -> tuple[str | None, str | None, FailureCode]:
    """(status, the reply paragraph, failure code) from a plain bounce's text for one recipient."""
    paragraph = _reply_paragraph(text)
    words = " ".join(paragraph.split())[:1000]
    qmail = _QMAIL_STATUS.search(paragraph)
    plain = _STATUS.search(paragraph)
    status = qmail.group(1) if qmail else plain.group(0) if plain else None
    reply = _REPLY_CODE.search(paragraph)
    code = classify(int(reply.group(1)) if reply else None, status, words)
    return status, words or None, code


def _reply_paragraph(text: str) -> str:
    """The paragraph quoting the remote reply (the first with a reply or status code), else all."""
    paragraphs = re.split(r"\n[ \t]*\n", text.strip())
    for paragraph in paragraphs:
        if _REPLY_CODE.search(paragraph) or _STATUS.search(paragraph) or _QMAIL_STATUS.search(paragraph):
            return paragraph
    return text


__all__ = ["Finding", "Kind", "Source", "parse", "suppresses"]
