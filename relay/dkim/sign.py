"""DKIM signing (RFC 6376, RFC 8463): the DKIM-Signature header lines to prepend to a message.

relaxed/relaxed, `From` signed once more than it occurs (so a second From cannot be added), the
header set of SIGNED_HEADERS when present, `t=` set, `l=` never. RSA and Ed25519 go through
`cryptography` (OpenSSL); the body hash is computed once for all keys, over the message in place
(relay.dkim.canon).

The RSA operation takes about 0.4 ms of CPU and the body hash some 1 ms per MB. Both release the
GIL (hashlib above 2 KB; `cryptography` around OpenSSL's RSA and Ed25519 operations), so
`sign_async` runs sign() in a small thread pool of its own: the event loop's thread spends some
0.05 ms of Python on a 2 KB message instead of 0.45 ms, and the RSA work runs on another core
when there is one (figures: bench/dkim_bench.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from relay.dkim.canon import hash_relaxed_body, relaxed_header
from relay.errors import RelayError

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# The fields a receiver shows or acts on; signed when present (RFC 6376 section 5.4.1).
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to", b"mime-version",
    b"content-type", b"list-unsubscribe", b"list-unsubscribe-post",
)
OVERSIGNED: frozenset[bytes] = frozenset({b"from"})

OFFLOAD_BYTES = 0  # sign every message in the pool (bench/dkim_bench.py: loop-thread CPU per message)
_POOL_THREADS = 2  # the machine's cores are shared with PostgreSQL: more would only queue
_pool: ThreadPoolExecutor | None = None
_FOLD_AT = 76
_FROM_FIELD = re.compile(rb"(?im)^from[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)")


class SigningError(RelayError):
    """The message cannot be signed (no header section, no From)."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A loaded private key with the d= and s= it signs for."""

    domain: str
    selector: str
    key: PrivateKey

    @property
    def algorithm(self) -> Algorithm:
        """The a= tag this key signs with."""
        return "ed25519-sha256" if isinstance(self.key, ed25519.Ed25519PrivateKey) else "rsa-sha256"


@dataclass(frozen=True, slots=True)
class _Header:
    """One header field as found: its lower-case name and its raw value (after the colon)."""

    name: bytes
    value: bytes


def sign(data: bytes | bytearray, keys: Sequence[SigningKey], now: int | None = None) -> bytes:
    """The DKIM-Signature fields (one per key, CRLF-terminated) to put in front of data."""
    if not keys:
        return b""
    headers, body_start = _split(data)
    body_hasher = hashlib.sha256()
    hash_relaxed_body(data, body_start, body_hasher)
    body_hash = base64.b64encode(body_hasher.digest())
    names = _names_to_sign(headers)
    signed_part = b"".join(_select(headers, names))
    timestamp = int(time.time()) if now is None else now
    return b"".join(_signature(key, names, body_hash, signed_part, timestamp) for key in keys)


async def sign_async(data: bytes | bytearray, keys: Sequence[SigningKey], now: int | None = None,
                     offload_bytes: int = OFFLOAD_BYTES) -> bytes:
    """sign() in the signing threads (inline below offload_bytes), so the event loop is not held."""
    global _pool
    if len(data) < offload_bytes:
        return sign(data, keys, now)
    if _pool is None:
        _pool = ThreadPoolExecutor(_POOL_THREADS, thread_name_prefix="dkim-sign")
    return await asyncio.get_running_loop().run_in_executor(_pool, sign, data, keys, now)


def from_header(data: bytes | bytearray) -> str | None:
    """The value of the first From: field, unfolded, or None when the header section has none."""
    end = data.find(b"\r\n\r\n")
    block = bytes(data[: len(data) if end < 0 else end + 2])
    match = _FROM_FIELD.search(block)
    if match is None:
        return None
    return re.sub(rb"\r\n(?=[ \t])", b"", match[1]).decode("utf-8", "replace").strip()


def _split(data: bytes | bytearray) -> tuple[list[_Header], int]:
    """The header fields in order, and where the body starts."""
    if data.startswith(b"\r\n"):
        raise SigningError("the message has no header section")
    end = data.find(b"\r\n\r\n")
    body_start = len(data) if end < 0 else end + 4
    block = bytes(data[: len(data) if end < 0 else end + 2])
    headers: list[_Header] = []
    for line in block.split(b"\r\n")[:-1] if block.endswith(b"\r\n") else block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and headers:
            last = headers[-1]
            headers[-1] = _Header(last.name, last.value + b"\r\n" + line)
            continue
        name, colon, value = line.partition(b":")
        if colon:
            headers.append(_Header(name.strip().lower(), value))
    if not any(h.name == b"from" for h in headers):
        raise SigningError("the message has no From: header")
    return headers, body_start


def _names_to_sign(headers: list[_Header]) -> list[bytes]:
    """The h= list: each signed name once per occurrence, From once more."""
    counts: dict[bytes, int] = {}
    for header in headers:
        counts[header.name] = counts.get(header.name, 0) + 1
    names: list[bytes] = []
    for name in SIGNED_HEADERS:
        count = counts.get(name, 0) + (1 if name in OVERSIGNED else 0)
        names.extend([name] * count)
    return names


def _select(headers: list[_Header], names: list[bytes]) -> list[bytes]:
    """The canonical fields h= names, each occurrence taken from the bottom up (RFC 6376 5.4.2)."""
    remaining: dict[bytes, list[_Header]] = {}
    for header in headers:
        remaining.setdefault(header.name, []).append(header)
    out: list[bytes] = []
    for name in names:
        stack = remaining.get(name)
        if stack:  # an exhausted name (the oversigned From) contributes nothing
            header = stack.pop()
            out.append(relaxed_header(header.name, header.value))
    return out


def _signature(key: SigningKey, names: list[bytes], body_hash: bytes, signed_part: bytes, timestamp: int) -> bytes:
    """One DKIM-Signature field, folded, with its b= computed over the headers and itself."""
    atoms = [
        b"v=1;", b" a=" + key.algorithm.encode() + b";", b" c=relaxed/relaxed;",
        b" d=" + key.domain.encode("ascii") + b";", b" s=" + key.selector.encode("ascii") + b";",
        b" t=%d;" % timestamp,
    ]
    h_atoms = [name + b":" for name in names]
    h_atoms[-1] = h_atoms[-1][:-1] + b";"
    atoms += [b" h=" + h_atoms[0], *h_atoms[1:], b" bh=" + body_hash + b";", b" b="]
    unsigned, width = _fold(b"DKIM-Signature: ", atoms)
    to_sign = signed_part + relaxed_header(b"dkim-signature", unsigned[len(b"DKIM-Signature:"):])[:-2]
    if isinstance(key.key, ed25519.Ed25519PrivateKey):
        signature = key.key.sign(hashlib.sha256(to_sign).digest())  # RFC 8463: Ed25519 over the SHA-256
    else:
        signature = key.key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
    # b= is the last tag, so the verifier removes everything after it: any folding there is safe.
    value, _ = _fold(b"", [bytes(c) for c in _pieces(base64.b64encode(signature))], width)
    return unsigned + value + b"\r\n"


def _pieces(encoded: bytes, size: int = 16) -> list[bytes]:
    """Base64 text cut into short atoms so that _fold can fill lines with it."""
    return [encoded[i:i + size] for i in range(0, len(encoded), size)]


def _fold(start: bytes, atoms: list[bytes], width: int | None = None) -> tuple[bytes, int]:
    """start and atoms joined, with CRLF SP before an atom that would pass the width; the last line's width."""
    out = [start]
    column = len(start) if width is None else width
    for atom in atoms:
        if column + len(atom) > _FOLD_AT and column > 1:
            atom = atom.lstrip(b" ")
            out.append(b"\r\n ")
            column = 1
        out.append(atom)
        column += len(atom)
    return b"".join(out), column
