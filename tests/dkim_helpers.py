"""Test helpers for DKIM: keys, and a dkimpy DNS lookup answering from the test's own records."""

from __future__ import annotations

from collections.abc import Callable

import dkim

from relay.dkim import keys, records
from relay.dkim.sign import PrivateKey, SigningKey


def key_record(domain: str, selector: str, key: PrivateKey) -> tuple[bytes, bytes]:
    """The (name., value) pair dkimpy's dnsfunc is asked for and answers with."""
    algorithm = SigningKey(domain, selector, key).algorithm
    name = records.dkim_name(domain, selector) + "."
    return name.encode(), records.dkim_value(keys.key_type(algorithm), keys.public_value(key)).encode()


def dnsfunc_for(published: dict[bytes, bytes]) -> Callable[..., bytes | None]:
    """A dkimpy dnsfunc that answers TXT lookups from published and nothing else."""
    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return published.get(name)
    return lookup


def verify_all(message: bytes, published: dict[bytes, bytes]) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature of message, top first."""
    checker = dkim.DKIM(message)
    count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
    lookup = dnsfunc_for(published)
    results = []
    for index in range(count):
        try:
            results.append(bool(dkim.DKIM(message).verify(idx=index, dnsfunc=lookup)))
        except dkim.DKIMException:
            results.append(False)
    return results
