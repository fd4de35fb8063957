"""Email address checks and authorized-sender matching (pure functions)."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

import idna

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


# RFC 6531: the local part may hold UTF-8 beyond atext (no controls, spaces or specials)
_LOCAL_UTF8 = re.compile(rf"^[\u0080-\U0010ffff{ATEXT}]+(\.[\u0080-\U0010ffff{ATEXT}]+)*$")
_NOT_IN_LOCAL = frozenset(("Cc", "Cf", "Zs", "Zl", "Zp", "Cs", "Co", "Cn"))


@functools.lru_cache(maxsize=4096)
def _a_label_domain(domain: str) -> str | None:
    """An internationalized domain in its ASCII (A-label) form, or None when it is not valid IDNA."""
    try:
        return idna.encode(domain.rstrip("."), uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


def is_valid_address(address: str) -> bool:
    """True for a plain addr-spec `local@domain.tld` within RFC 5321's length limits; an
    internationalized one (RFC 6531: UTF-8 local part, IDNA domain) counts its length in octets."""
    if not address or len(address) > 254:
        return False
    if not address.isascii():
        return is_valid_utf8_address(address)
    local, sep, domain = address.rpartition("@")
    return bool(sep) and 0 < len(local) <= 64 and bool(_LOCAL.match(local)) and is_valid_domain(domain)


def is_valid_utf8_address(address: str) -> bool:
    """An internationalized address (RFC 6531): printable UTF-8 local part, a valid IDNA domain."""
    local, sep, domain = address.rpartition("@")
    if not sep or len(address.encode()) > 254 or not 0 < len(local.encode()) <= 64:
        return False
    if any(unicodedata.category(ch) in _NOT_IN_LOCAL for ch in local) or not _LOCAL_UTF8.match(local):
        return False
    a_label = domain if domain.isascii() else _a_label_domain(domain)
    return a_label is not None and is_valid_domain(a_label)


def needs_smtputf8(address: str) -> bool:
    """Does this address need SMTPUTF8 (RFC 6531) on the wire? (A non-ASCII local part or domain.)"""
    return not address.isascii()


def _plain(text: str) -> bool:
    return text.isascii() and "xn--" not in text.lower()


@functools.lru_cache(maxsize=4096)
def canonical(address_or_domain: str) -> str:
    """The form compared for sender matching: NFC, lower case, the domain as its Unicode U-label
    (so 'müller@bücher.de' and 'MU\u0308LLER@xn--bcher-kva.de' are the same sender)."""
    if _plain(address_or_domain):
        return address_or_domain.lower()
    local, sep, domain = address_or_domain.rpartition("@")
    a_label = _a_label_domain(unicodedata.normalize("NFC", domain)) or domain
    try:
        u_label = idna.decode(a_label)
    except (idna.IDNAError, UnicodeError, ValueError):
        u_label = domain
    return f"{unicodedata.normalize('NFC', local).lower()}{sep}{u_label.lower()}"


# something shaped like an address inside free text (a display name): local@domain.tld
_ADDRESS_IN_TEXT = re.compile(r"[^\s<>()\[\]\\,;:\"'@]+@[^\s<>()\[\]\\,;:\"'@]+\.[^\s<>()\[\]\\,;:\"'@.]+")


def addresses_in_text(text: str) -> tuple[str, ...]:
    """The address-shaped words of a display name ('"ceo@bank.com" <a@b>' shows ceo@bank.com)."""
    return tuple(m.group(0).lower().rstrip(".") for m in _ADDRESS_IN_TEXT.finditer(text)) if "@" in text else ()


def normalize(address: str) -> str:
    """The form used for matching and cap counting: the local part kept, the domain lower-cased
    (an internationalized address: its local part in NFC, its domain as a U-label)."""
    local, _, domain = address.rpartition("@")
    if _plain(address):
        return f"{local}@{domain.lower()}"
    return f"{unicodedata.normalize('NFC', local)}@{canonical(domain)}"


def matching_rule(address: str, rules: Iterable[SenderRule]) -> SenderRule | None:
    """The authorized-sender rule covering address: an exact address wins over its domain."""
    lowered = canonical(address)
    domain = lowered.rpartition("@")[2]
    by_domain = None
    for rule in rules:
        pattern = rule.pattern if _plain(rule.pattern) else canonical(rule.pattern)
        if pattern == lowered:
            return rule
        if pattern == domain:
            by_domain = rule
    return by_domain


def is_valid_sender_pattern(pattern: str) -> bool:
    """An authorized-sender entry: an exact address or a bare domain (internationalized too)."""
    if "@" in pattern:
        return is_valid_address(pattern)
    return is_valid_domain(pattern if pattern.isascii() else (_a_label_domain(pattern) or ""))
