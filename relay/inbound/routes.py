"""Route matches: an exact address, `*@domain`, or a `/regular expression/`; the first by priority wins."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import regex

from relay.errors import RelayError

log = logging.getLogger(__name__)

MAX_MATCH = 500
# A route's expression runs on every RCPT TO of the MX: bounded so that no pattern can stall it.
_REGEX_TIMEOUT = 0.05


class BadMatch(RelayError, ValueError):
    """A route match that is none of the three forms, or a regular expression that does not compile."""


class Format(StrEnum):
    """How the message is POSTed: CloudMailin-style normalized JSON, or the message as message/rfc822."""

    JSON = "json"
    RAW = "raw"


class MatchKind(StrEnum):
    """The three forms of a route match."""

    EXACT = "exact"
    DOMAIN = "domain"
    REGEX = "regex"


@dataclass(frozen=True, slots=True)
class Matcher:
    """A compiled match: does a recipient address fall under it?"""

    kind: MatchKind
    text: str  # as the user wrote it (normalized to lower case for exact and domain)
    pattern: regex.Pattern[str] | None = field(default=None, compare=False)

    def matches(self, address: str) -> bool:
        """Case-insensitive test of one recipient address."""
        lowered = address.lower()
        if self.kind is MatchKind.EXACT:
            return lowered == self.text
        if self.kind is MatchKind.DOMAIN:
            return lowered.rpartition("@")[2] == self.text[2:]
        assert self.pattern is not None
        try:
            return self.pattern.fullmatch(address, timeout=_REGEX_TIMEOUT) is not None
        except TimeoutError:
            log.warning("route expression %s gave up on %r (too slow): no match", self.text, address)
            return False


def compile_match(text: str) -> Matcher:
    """Check and compile a route match; BadMatch says what is wrong with it."""
    text = text.strip()
    if not text:
        raise BadMatch("a route match is an address, *@domain or /regular expression/")
    if len(text) > MAX_MATCH:
        raise BadMatch(f"a route match is at most {MAX_MATCH} characters")
    if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
        try:
            pattern = regex.compile(text[1:-1], regex.IGNORECASE)
        except regex.error as error:
            raise BadMatch(f"the regular expression does not compile: {error}") from None
        return Matcher(MatchKind.REGEX, text, pattern)
    if any(char.isspace() or ord(char) < 0x20 for char in text):
        raise BadMatch("an address match may not contain spaces or control characters")
    local, at, domain = text.lower().rpartition("@")
    if not at or not local or not domain.strip("."):
        raise BadMatch(f"{text!r} is not an address, *@domain or /regular expression/")
    if local == "*":
        return Matcher(MatchKind.DOMAIN, f"*@{domain}")
    if "*" in local:
        raise BadMatch("only a whole local part can be a wildcard (*@domain); use /regular expression/")
    return Matcher(MatchKind.EXACT, f"{local}@{domain}")


@dataclass(frozen=True, slots=True)
class Route:
    """One account's rule: recipients matching `match` are POSTed to `url` in `format`."""

    id: str
    account_id: int
    match: str
    url: str
    format: Format = Format.JSON
    priority: int = 0  # lower first; ties go to the older route
    oversize_text: str | None = None
    created: datetime | None = None
    account_name: str = ""

    def matcher(self) -> Matcher:
        """The compiled match (cached per text)."""
        return _cached_matcher(self.match)


_MATCHERS: dict[str, Matcher] = {}


def _cached_matcher(text: str) -> Matcher:
    found = _MATCHERS.get(text)
    if found is None:
        if len(_MATCHERS) > 10_000:
            _MATCHERS.clear()
        found = _MATCHERS[text] = compile_match(text)
    return found


def first_match(routes: Sequence[Route], address: str) -> Route | None:
    """The route that takes this recipient: routes are given in priority order."""
    for route in routes:
        if route.matcher().matches(address):
            return route
    return None


def ordered(routes: Iterable[Route]) -> list[Route]:
    """Routes in the order they are tried: priority, then age, then id."""
    return sorted(routes, key=lambda r: (r.priority, r.created.timestamp() if r.created else 0.0, r.id))
