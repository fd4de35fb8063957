"""Map an upstream SMTP reply (code, RFC 3463 enhanced code, text) to the relay's failure code."""

from __future__ import annotations

import enum
import re


class FailureCode(enum.IntEnum):
    """The project's failure-code contract; the numbers are fixed.

    1002 vs 1003: 1003 only when the reply names a public DNS blocklist of connecting IPs
    (Spamhaus, SpamCop, Barracuda, SORBS, "RBL"/"DNSBL", "blocked using <zone>", "listed
    at <zone>"). The receiver's own block list, banned-IP replies and DNS lists of sender
    domains (Spamhaus DBL, RHSBL) are 1002.
    """

    BLOCKLISTED = 1002
    IP_BLOCKLISTED = 1003
    CONTENT = 1004
    TOO_MANY_CONNECTIONS = 1006
    VIRUS = 1007
    CHALLENGE_RESPONSE = 1011
    REJECTED_OTHER = 1999
    NO_SUCH_USER = 2001
    BAD_DOMAIN = 2002
    BAD_ADDRESS_FORMAT = 2003
    ADDRESS_GONE = 2004
    ADDRESS_OTHER = 2999
    MAILBOX_FULL = 3001
    ACCOUNT_DISABLED = 3002
    DEFERRED_UNTIL_EXPIRED = 3003
    TEMPORARY_OTHER = 3999
    SERVER_BUSY = 4001
    PROTOCOL_ERROR = 4002
    CONNECT_FAILED = 4003
    EXPIRED = 4004
    DOMAIN_NOT_ACCEPTED = 4006
    SYSTEM_OTHER = 4999
    AUTO_REPLY = 5001
    INFO_OTHER = 5999
    UNKNOWN = 9999


F = FailureCode
_Rules = tuple[tuple[re.Pattern[str], FailureCode], ...]


def _rules(*pairs: tuple[str, FailureCode]) -> _Rules:
    return tuple((re.compile(pattern, re.IGNORECASE), code) for pattern, code in pairs)


# Specific phrases: they say more than any status code, so they are tried first. Order matters:
# replies often quote several reasons, and the earlier (more specific) reason wins.
_STRONG = _rules(
    (r"\bvirus|malware|\binfected\b", F.VIRUS),
    (r"challenge[- ]response|verify (?:that )?you are (?:a )?human|\bboxbe\b|spam ?arrest",
     F.CHALLENGE_RESPONSE),
    (r"out of (?:the )?office|auto(?:matic)?[- ]?(?:reply|replies|response|responder)"
     r"|autoreply|\bvacation\b", F.AUTO_REPLY),
    # Exim's sender verification quotes the *sender's* bounce ("User unknown"); that must not
    # read as a problem with our recipient.
    (r"verification failed for|sender verify failed", F.REJECTED_OTHER),
    # Domain lists (DBL, RHSBL) judge the sender's domain, not our IP: before the IP-list rule,
    # which would otherwise match "spamhaus" / "blocked using".
    (r"sender (?:address|domain)[^;]*blocked using|\brhsbl\b|\bdbl\.", F.BLOCKLISTED),
    (r"\b(?:uribl|surbl)\b|\b(?:url|uri|link)s?\b[^.;]{0,30}(?:black|block|deny)[- ]?list",
     F.CONTENT),
    (r"spamhaus|spamcop|barracuda|\bsorbs\b|\b(?:dns)?rbls?\b|\bdnsbls?\b|blocked using"
     r"|listed (?:at|on|in|by) [\w-]+(?:\.[\w-]+)+", F.IP_BLOCKLISTED),
    (r"(?:block|black|deny)[- ]?list|\bbanned\b", F.BLOCKLISTED),
    # Throttling replies often mention spam or complaints too; the throttle is what to act on.
    (r"rate[- ]limit|\b(?:unusual|high|excessive) rate|at a rate|unexpected volume|throttl"
     r"|too many (?:\w+ ){0,3}(?:connections|messages|mails|emails)", F.TOO_MANY_CONNECTIONS),
    (r"retry time(?:out)? exceeded|(?:could not be delivered|cannot send message) for \d+",
     F.DEFERRED_UNTIL_EXPIRED),
    (r"too old|message expired|expired in queue|delivery time expired", F.EXPIRED),
    # A socket-level "Connection timed out" is a failed connect, not a stalled conversation.
    (r"\bconnect to\b|connection (?:refused|timed out)|(?:unable|failed|could not|couldn't)"
     r" (?:to )?connect|no route to host|(?:network|host) (?:is )?unreachable", F.CONNECT_FAILED),
    (r"\btimed? ?out\b|unrecognized command|command unrecognized|bad sequence of commands"
     r"|protocol (?:error|violation)", F.PROTOCOL_ERROR),
    # Gmail's 5.7.26 text ends with "...protect our users from spam": authentication, not content.
    (r"\b(?:spf|dkim|dmarc)\b|unauthenticated", F.REJECTED_OTHER),
    # RFC 5321's "insufficient system storage" (452, RFC 3463 X.3.1 "mail system full") is the
    # receiving server's own storage, not the recipient's quota: the server cannot take mail now.
    (r"insufficient system storage|mail system (?:is )?full|system storage", F.SERVER_BUSY),
    (r"local (?:problem|error)|internal (?:server )?error|system (?:problem|error|failure)",
     F.SYSTEM_OTHER),
    (r"over ?quota|quota ?exceeded|exceeded (?:\w+ )?quota|mailbox (?:is )?full"
     r"|mailbox size limit|insufficient storage", F.MAILBOX_FULL),
    (r"size (?:limit|exceeds)|(?:message|mail) (?:is )?too (?:big|large)"
     r"|exceeds? (?:the )?max\w* (?:message )?size", F.REJECTED_OTHER),
    (r"no longer (?:valid|available|active|in use|exists?)"
     r"|(?:account|mailbox) (?:has been |was )?(?:closed|deleted|terminated|removed)",
     F.ADDRESS_GONE),
    # Postfix's "delivery temporarily suspended" is its own queue state, not the recipient's.
    (r"\b(?:disabled|inactive|deactivated)\b|(?<!temporarily )\bsuspended\b", F.ACCOUNT_DISABLED),
    (r"relay(?:ing)? (?:access )?(?:denied|not (?:permitted|allowed))"
     r"|(?:do not|not permitted to|unable to|cannot) relay|not accept(?:ing)? mail for"
     r"|not a local domain|allowed rcpthosts|non-accepted domain", F.DOMAIN_NOT_ACCEPTED),
    (r"(?:domain|host)(?: or domain)?(?: name)? not found|\bno mx\b|null mx|nxdomain"
     r"|no such domain|domain (?:does not|doesn't) exist", F.BAD_DOMAIN),
    # Exchange Online answers "Access denied" for recipients missing from its directory (DBEB).
    (r"user unknown|unknown (?:user|recipient|mailbox|address)|no such (?:user|mailbox|recipient"
     r"|address)|not exist|(?:mailbox|user|recipient|address) not found"
     r"|invalid (?:recipient|mailbox|user)|recipient address rejected: access denied"
     r"|(?:doesn't|does not) have an? [\w.]+ account"
     # Exchange names the lookup failure whatever the wording around it.
     r"|resolver\.adr\.recip(?:ient)?notfound", F.NO_SUCH_USER),
    (r"(?:address|mailbox)[^.;]{0,20}syntax|syntax[^.;]{0,20}address"
     r"|malformed (?:\w+ )?address|address format", F.BAD_ADDRESS_FORMAT),
    (r"\bspam\b|unsolicited|\bcontent\b|phish|policy reasons"
     r"|(?:message|mail) (?:was )?(?:rejected|refused|blocked) (?:due to|because)", F.CONTENT),
    (r"administrative prohibition", F.REJECTED_OTHER),
    (r"gr[ae]y ?list", F.TEMPORARY_OTHER),
    (r"too busy|server (?:is )?busy|overloaded|too many (?:concurrent )?(?:sessions|processes)",
     F.SERVER_BUSY),
)

# Generic wordings (RFC 5321's stock "mailbox unavailable" is used for any refusal): they only
# beat a vague enhanced code (X.5.0), not a precise one (X.1.1).
_WEAK = _rules(
    (r"mailbox unavailable", F.ADDRESS_OTHER),
    (r"unroute?able", F.BAD_DOMAIN),
    (r"invalid (?:\w+ )?address|not a valid (?:\w+ )?address", F.BAD_ADDRESS_FORMAT),
)

# Keys: "class.subject.detail" or "class.subject"; class "X" means either 4 or 5. Subject-only
# X.1/X.2/X.7 are listed for class 5 alone: a transient 4.7.x is throttling or greylisting,
# not a rejection, so the basic reply code describes it better.
_ENHANCED: dict[str, FailureCode] = {
    "X.1.1": F.NO_SUCH_USER, "X.1.2": F.BAD_DOMAIN, "X.1.3": F.BAD_ADDRESS_FORMAT,
    "X.1.6": F.ADDRESS_GONE, "X.1.10": F.BAD_DOMAIN,  # RFC 7505 null MX
    "X.2.1": F.ACCOUNT_DISABLED, "X.2.2": F.MAILBOX_FULL, "X.2.3": F.REJECTED_OTHER,
    # RFC 3463: X.3.1 mail system full (the server's storage), X.4.1 no answer from host,
    # X.1.7/X.1.8 the *sender's* address (not the recipient's)
    "X.3.1": F.SERVER_BUSY, "X.4.1": F.CONNECT_FAILED, "5.1.7": F.REJECTED_OTHER, "5.1.8": F.REJECTED_OTHER,
    "X.3.2": F.SERVER_BUSY, "X.3.4": F.REJECTED_OTHER, "X.4.4": F.BAD_DOMAIN,
    "X.4.5": F.SERVER_BUSY, "X.4.7": F.EXPIRED, "5.7.1": F.REJECTED_OTHER,
    "X.3": F.SYSTEM_OTHER, "X.4": F.SYSTEM_OTHER, "X.5": F.PROTOCOL_ERROR,
    "5.1": F.ADDRESS_OTHER, "5.2": F.ADDRESS_OTHER, "5.7": F.REJECTED_OTHER,
}

_BASIC: dict[int, FailureCode] = {
    421: F.SERVER_BUSY, 550: F.ADDRESS_OTHER, 551: F.ADDRESS_OTHER, 552: F.MAILBOX_FULL,
    553: F.ADDRESS_OTHER, 554: F.REJECTED_OTHER,
    **dict.fromkeys(range(500, 505), F.PROTOCOL_ERROR),
}
# A 2xx/3xx reply is not a failure, so whatever it says is informational.
_BY_CLASS = {2: F.INFO_OTHER, 3: F.INFO_OTHER, 4: F.TEMPORARY_OTHER, 5: F.REJECTED_OTHER}

# Optional "550 " / "550-" reply code, then an optional enhanced code, at the start of each line:
# Multi-line replies come with the enhanced code repeated on every line (our client's Reply, and
# aiosmtplib's, join the lines' texts).
_PREFIX = re.compile(
    r"^[ \t]*(?:[2-5]\d\d(?:[ \t-]|$))?[ \t]*(?:([245]\.\d{1,3}\.\d{1,3})(?=\s|$))?[ \t]*",
    re.MULTILINE,
)


def split_enhanced(text: str) -> tuple[str | None, str]:
    """Split a leading RFC 3463 enhanced status code (e.g. '5.1.1') off a reply text."""
    found: list[str] = []

    def strip(match: re.Match[str]) -> str:
        if match.group(1) and not found:
            found.append(match.group(1))
        return ""

    rest = _PREFIX.sub(strip, text).strip()
    return (found[0] if found else None), rest


def _match(rules: _Rules, text: str) -> FailureCode | None:
    return next((code for pattern, code in rules if pattern.search(text)), None)


def _enhanced(enhanced: str, *, detail: bool) -> FailureCode | None:
    parts = enhanced.split(".")
    if len(parts) != 3:
        return None
    tail = ".".join(parts[1:]) if detail else parts[1]
    return _ENHANCED.get(f"{parts[0]}.{tail}") or _ENHANCED.get(f"X.{tail}")


def classify(code: int | None, enhanced: str | None, text: str) -> FailureCode:
    """Failure code for an upstream reply; a None enhanced code is taken from the start of text."""
    found, rest = split_enhanced(text or "")
    status = (enhanced or found or "").strip()
    return (
        _match(_STRONG, rest)
        or _enhanced(status, detail=True)
        or _match(_WEAK, rest)
        or _enhanced(status, detail=False)
        or (F.UNKNOWN if code is None else _BASIC.get(code, _BY_CLASS.get(code // 100, F.UNKNOWN)))
    )


def for_connect_failure() -> FailureCode:
    """Failure code when the upstream could not be reached at all."""
    return F.CONNECT_FAILED


def for_timeout() -> FailureCode:
    """Failure code when the upstream stopped answering mid-conversation."""
    return F.PROTOCOL_ERROR


_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_DIAGNOSTIC_TYPE = re.compile(r"^\s*([A-Za-z][\w-]*)\s*;")
_REPLY_CODE = re.compile(r"^\s*([2-5]\d\d)(?=[ \t-]|$)")


def classify_report(status: str | None, diagnostic: str | None) -> FailureCode:
    """Failure code for a DSN's Status and Diagnostic-Code fields (RFC 3464), or the same pair
    taken from a plain-text bounce; UNKNOWN when neither says anything."""
    text = diagnostic or ""
    kind = _DIAGNOSTIC_TYPE.match(text)
    # "smtp; 550 5.1.1 ..." carries a reply; "X-Postfix; ..." or "X-Unix; ..." is free text.
    if kind:
        text = text[kind.end():]
    reply = _REPLY_CODE.match(text)
    code = int(reply.group(1)) if reply else None
    found = _STATUS.search(status or "")
    enhanced = found.group(0) if found else None
    # A vague Status (5.0.0) says less than the enhanced code quoted in the diagnostic.
    if enhanced is None or enhanced.endswith(".0.0"):
        enhanced = split_enhanced(text)[0] or enhanced
    result = classify(code, enhanced, text)
    if result is F.UNKNOWN and enhanced:
        return _BY_CLASS[int(enhanced[0])]
    return result
