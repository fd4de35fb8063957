"""Standard Webhooks signing: `whsec_` secrets and the webhook-id/-timestamp/-signature headers.

The signature is `v1,` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.".encode() + body)), where key is
the secret's base64 part decoded; during a secret rotation several signatures are sent, space-separated,
so a receiver holding either secret accepts the request (standardwebhooks.com, "Signature scheme").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Sequence

from relay.errors import RelayError

PREFIX = "whsec_"
Body = bytes | bytearray | memoryview
# 24 to 64 random bytes is what the scheme recommends; 32 is an HMAC-SHA256 block-half, like Svix.
_SECRET_BYTES = 32


class BadSecret(RelayError, ValueError):
    """A signing secret that is not `whsec_` followed by base64 of at least 24 bytes."""


def generate_secret() -> str:
    """A new random signing secret, `whsec_<base64>`."""
    return PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret."""
    if not secret.startswith(PREFIX):
        raise BadSecret("a signing secret starts with whsec_")
    try:
        key = base64.b64decode(secret[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise BadSecret("a signing secret is whsec_ followed by base64") from None
    if len(key) < 24:
        raise BadSecret("a signing secret holds at least 24 bytes")
    return key


def signature(secret: str, message_id: str, timestamp: int, body: Body) -> str:
    """One `v1,<base64>` signature of body under secret."""
    mac = hmac.new(secret_key(secret), f"{message_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def new_message_id() -> str:
    """A unique webhook-id for a request that is not a retry of an earlier one."""
    return f"msg_{uuid.uuid4().hex}"


def signed_headers(active_secrets: Sequence[str], message_id: str, body: Body,
                   timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for body, signed under every active secret (rotation)."""
    if not active_secrets:
        raise BadSecret("at least one signing secret is needed")
    if any(char in message_id for char in " \r\n,"):
        raise ValueError(f"a webhook-id may not contain spaces, commas or line breaks: {message_id!r}")
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": " ".join(signature(s, message_id, stamp, body) for s in active_secrets),
    }
