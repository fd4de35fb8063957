"""The one table: the app's HTTP answer -> the SMTP reply to DATA (docs/inbound.md, "Inbound mail to HTTP")."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from relay.outbound.client import ErrorKind, HttpResult

MAX_TEXT = 400
REFUSED_TEXT = "the receiving application refused the message"
UNAVAILABLE_TEXT = "the receiving application is unavailable, try again later"


class Severity(IntEnum):
    """How bad an answer is: the DATA reply of several routes is the worst (451 > 550 > 250)."""

    DELIVERED = 0
    REFUSED = 1
    DEFERRED = 2


@dataclass(frozen=True, slots=True)
class Verdict:
    """One route's outcome: the SMTP reply, and what the inbound log records of the HTTP side."""

    reply: str
    severity: Severity
    http_status: int  # 0 when there was no HTTP answer
    response_text: str  # the first line shown to the sender (4xx), or what came back / went wrong

    @property
    def outcome(self) -> str:
        """The metrics label: delivered, refused, deferred or a kind of failure."""
        return self.severity.name.lower()


def _printable(line: str) -> str:
    """Printable ASCII only (anything else becomes '?'), at most MAX_TEXT characters."""
    return "".join(c if " " <= c <= "~" else "?" for c in line)[:MAX_TEXT].strip()


def first_line(body: bytes) -> str:
    """The first non-empty line of a text body, as printable ASCII."""
    for line in body.decode("utf-8", "replace").splitlines():
        if line.strip():
            return _printable(line)
    return ""


def verdict(result: HttpResult) -> Verdict:
    """docs/inbound.md's table, exactly: 2xx 250; 4xx 550 with the text/plain first line; 5xx, no answer,
    a redirect not followed and any other status 451."""
    status = result.status
    if result.error is not None:
        detail = _printable(f"{result.error.value}: {result.detail}" if result.detail else result.error.value)
        enhanced = "4.4.2" if result.error is ErrorKind.TIMEOUT else "4.4.1"
        return Verdict(f"451 {enhanced} {UNAVAILABLE_TEXT}", Severity.DEFERRED, 0, detail)
    if 200 <= status < 300:
        return Verdict("250 2.0.0 OK: delivered to the application", Severity.DELIVERED, status,
                       first_line(result.body))
    if 400 <= status < 500:
        text = first_line(result.body) if result.content_type == "text/plain" else ""
        return Verdict(f"550 5.0.0 {text or REFUSED_TEXT}", Severity.REFUSED, status, text or first_line(result.body))
    return Verdict(f"451 4.3.0 {UNAVAILABLE_TEXT}", Severity.DEFERRED, status, first_line(result.body))


def oversize(text: str | None) -> str:
    """552 5.3.4 with the route's own text when it has one."""
    shown = _printable(text or "") or "message too large for this recipient"
    return f"552 5.3.4 {shown}"


def worst(verdicts: list[Verdict]) -> Verdict:
    """The verdict that answers DATA: the most severe, the first of equals."""
    return max(verdicts, key=lambda v: v.severity)
