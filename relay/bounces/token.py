"""VERP bounce addresses: b+<token>@<domain>, the token naming message and recipient under an HMAC."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid

PREFIX = "b+"
MAX_RECIPIENT_INDEX = 0xFFFF
_INDEX_BYTES = 2
# 80 bits of tag: forging one address takes ~2**80 tries, and the local part stays 47 octets
# ("b+" and 45 base32 characters for 16 + 2 + 10 bytes), well under RFC 5321's 64.
_TAG_BYTES = 10
_PAYLOAD_BYTES = 16 + _INDEX_BYTES
_TOKEN_CHARS = 45
# The server's key secret also keys the API-key digests: a derived key keeps the two uses apart.
_CONTEXT = b"relay bounce token v1"


def _tag(secret: bytes, payload: bytes) -> bytes:
    key = hmac.new(secret, _CONTEXT, hashlib.sha256).digest()
    return hmac.new(key, payload, hashlib.sha256).digest()[:_TAG_BYTES]


def token(message_id: uuid.UUID, recipient_index: int, secret: bytes) -> str:
    """The token alone: lowercase base32 without padding, since mail systems may fold case."""
    if not 0 <= recipient_index <= MAX_RECIPIENT_INDEX:
        raise ValueError(f"recipient index {recipient_index} is outside 0..{MAX_RECIPIENT_INDEX}")
    payload = message_id.bytes + recipient_index.to_bytes(_INDEX_BYTES, "big")
    raw = payload + _tag(secret, payload)
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def make(message_id: uuid.UUID, recipient_index: int, secret: bytes, domain: str) -> str:
    """The envelope sender b+<token>@<domain> for one recipient of one message."""
    return f"{PREFIX}{token(message_id, recipient_index, secret)}@{domain.lower()}"


def parse(address: str, domain: str, secret: bytes) -> tuple[uuid.UUID, int] | None:
    """(message id, recipient index) named by a bounce address; None if foreign, garbled or forged."""
    addr = address.strip().strip("<>").strip()
    local, at, addr_domain = addr.rpartition("@")
    if not at or addr_domain.lower().rstrip(".") != domain.lower().rstrip("."):
        return None
    local = local.lower()
    if not local.startswith(PREFIX) or len(local) != len(PREFIX) + _TOKEN_CHARS:
        return None
    text = local[len(PREFIX):].upper()
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        return None
    # base32 of 28 bytes leaves one spare bit: only the canonical spelling is ours.
    if base64.b32encode(raw).decode("ascii").rstrip("=") != text:
        return None
    payload, tag = raw[:_PAYLOAD_BYTES], raw[_PAYLOAD_BYTES:]
    if len(tag) != _TAG_BYTES or not hmac.compare_digest(tag, _tag(secret, payload)):
        return None
    return uuid.UUID(bytes=payload[:16]), int.from_bytes(payload[16:], "big")
