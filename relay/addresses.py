"""Email address checks and authorized-sender matching (pure functions)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from relay.domain import SenderRule

# RFC 5321 dot-atom local part (quoted local parts are legal but are refused here: transactional
# senders never need them and they are a favourite of header-injection tricks)
ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"  # RFC 5322 atext, as a regex character class body
_LOCAL = re.compile(rf"^[{ATEXT}]+(\.[{ATEXT}]+)*$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def is_valid_domain(domain: str) -> bool:
    """A DNS host name with at least two labels, or an address literal is refused."""
    if not domain or len(domain) > 253 or not domain.isascii():
        return False
    labels = domain.rstrip(".").split(".")
    return len(labels) >= 2 and all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def is_valid_address(address: str) -> bool:
    """True for a plain addr-spec `local@domain.tld` within RFC 5321's length limits."""
    if not address or len(address) > 254 or not address.isascii():
        return False
    local, sep, domain = address.rpartition("@")
    return bool(sep) and 0 < len(local) <= 64 and bool(_LOCAL.match(local)) and is_valid_domain(domain)


def normalize(address: str) -> str:
    """The form used for matching and cap counting: the local part kept, the domain lower-cased."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


def matching_rule(address: str, rules: Iterable[SenderRule]) -> SenderRule | None:
    """The authorized-sender rule covering address: an exact address wins over its domain."""
    lowered = address.lower()
    domain = lowered.rpartition("@")[2]
    by_domain = None
    for rule in rules:
        if rule.pattern == lowered:
            return rule
        if rule.pattern == domain:
            by_domain = rule
    return by_domain


def is_valid_sender_pattern(pattern: str) -> bool:
    """An authorized-sender entry: an exact address or a bare domain."""
    return is_valid_address(pattern) if "@" in pattern else is_valid_domain(pattern)
