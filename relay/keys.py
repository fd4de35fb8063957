"""API keys: the rk_<id>_<secret> format, generation, and the keyed digest that is all we store."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "rk"
_ID_BYTES = 6  # 12 hex characters: an index, not a secret
_SECRET_BYTES = 32  # 256 bits from the OS CSPRNG


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A presented key split into its public id and its secret."""

    key_id: str
    secret: str


def new_key_id() -> str:
    """A fresh public key id."""
    return secrets.token_hex(_ID_BYTES)


def new_secret() -> str:
    """A fresh 256-bit secret, URL-safe."""
    return secrets.token_urlsafe(_SECRET_BYTES)


def format_key(key_id: str, secret: str) -> str:
    """The full key as shown to the user once."""
    return f"{PREFIX}_{key_id}_{secret}"


def parse_key(raw: str) -> ParsedKey | None:
    """Split a presented key, or None when it cannot be one of ours."""
    prefix, sep, rest = raw.strip().partition("_")
    key_id, sep2, secret = rest.partition("_")
    if prefix != PREFIX or not sep or not sep2 or len(key_id) != 2 * _ID_BYTES or not secret:
        return None
    if any(c not in "0123456789abcdef" for c in key_id) or len(secret) > 128:
        return None
    return ParsedKey(key_id, secret)


def digest(server_secret: bytes, secret: str) -> bytes:
    """Keyed SHA-256 digest of a key secret: a stolen database alone cannot test guesses."""
    return hmac.new(server_secret, secret.encode(), hashlib.sha256).digest()


def verify(server_secret: bytes, secret: str, stored: bytes) -> bool:
    """Constant-time check of a presented secret against the stored digest."""
    return hmac.compare_digest(digest(server_secret, secret), stored)
