"""DKIM relaxed canonicalization (RFC 6376 section 3.4.2 and 3.4.4) over the bytes the relay holds.

The body is hashed where it lies: it is walked in chunks cut after a CRLF, a chunk that is already
canonical (no tab, no double space, no space before CRLF: every base64 part, most text) is fed to
the hash as a memoryview slice without a copy, and only a chunk that needs rewriting is copied and
rewritten with a few bytes.replace passes. Trailing blank lines are found from the end first, so the walk stops
before them and never has to hold anything back.

Line endings are CRLF; a bare CR or LF is an ordinary character, as in dkimpy. A body that does not
end in CRLF is canonicalized as if it did, which is what a receiver sees once SMTP has added the
CRLF that every DATA section ends with.
"""

from __future__ import annotations

import re
from typing import Protocol

Buffer = bytes | bytearray | memoryview

CHUNK_BYTES = 256 * 1024  # big enough that per-chunk overhead vanishes, small enough to stay in cache
_TAIL_BLOCK = 4096

_REVERSED_BLANK = re.compile(rb"(?:\n\r|[ \t])*")  # blank-line material, read backwards
_HEADER_WSP = re.compile(rb"[ \t]+")
_LINE_BREAK = re.compile(rb"\r?\n")


class Hasher(Protocol):
    """What the body walk needs of a hashlib object."""

    def update(self, data: Buffer, /) -> None: ...


def content_end(data: Buffer, start: int, end: int, block_bytes: int = _TAIL_BLOCK) -> int:
    """Index just after the last byte of data[start:end] that survives as content of a non-blank line."""
    pos = end
    while pos > start:
        low = max(start, pos - block_bytes)
        block = bytes(data[low:pos])[::-1]
        kept = len(block) - _REVERSED_BLANK.match(block).end()  # type: ignore[union-attr]  # matches empty
        if kept == 0:
            pos = low
            continue
        stop = low + kept  # data[stop - 1] ended the blank run
        if stop - 1 == low and data[low] == 0x0A and low > start and data[low - 1] == 0x0D:
            pos = low - 1  # a CRLF cut by the block edge: it is blank too, read on before it
            continue
        return stop
    return start


def hash_relaxed_body(data: bytes | bytearray, start: int, hasher: Hasher, chunk_bytes: int = CHUNK_BYTES,
                      tail_block_bytes: int = _TAIL_BLOCK) -> None:
    """Feed the relaxed canonical form of data[start:] to hasher, copying only chunks that change."""
    stop = content_end(data, start, len(data), tail_block_bytes)
    pos = start
    with memoryview(data) as view:  # released on the way out: a bytearray may grow afterwards
        while pos < stop:
            cut = _chunk_end(data, pos, stop, chunk_bytes)
            if _is_canonical(data, pos, cut):
                with view[pos:cut] as chunk:
                    hasher.update(chunk)
            else:
                hasher.update(_rewrite(bytes(view[pos:cut])))
            pos = cut
    if stop > start:
        hasher.update(b"\r\n")


def _is_canonical(data: bytes | bytearray, pos: int, cut: int) -> bool:
    """No tab, no run of spaces, no space before a line end in data[pos:cut]."""
    if data.find(b"\t", pos, cut) >= 0:
        return False
    if data.find(b" ", pos, cut) < 0:  # one-byte searches are memchr: base64 parts end here
        return True
    return data.find(b"  ", pos, cut) < 0 and data.find(b" \r\n", pos, cut) < 0


def _rewrite(chunk: bytes) -> bytes:
    """Whole lines in relaxed form, with bytes.replace passes (C speed) rather than a regex per run."""
    chunk = chunk.replace(b"\t", b" ")
    while b"  " in chunk:  # each pass halves every run of spaces
        chunk = chunk.replace(b"  ", b" ")
    return chunk.replace(b" \r\n", b"\r\n")  # a run is one space now, so one pass clears line ends


def _chunk_end(data: bytes | bytearray, pos: int, stop: int, chunk_bytes: int) -> int:
    """Where the chunk from pos ends: just after a CRLF about chunk_bytes on, or at stop."""
    limit = pos + chunk_bytes
    if limit >= stop:
        return stop
    cut = data.rfind(b"\r\n", pos, limit)
    if cut < 0:  # one line longer than a chunk: take it whole
        cut = data.find(b"\r\n", limit, stop)
        return stop if cut < 0 else cut + 2
    return cut + 2


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """One header field in relaxed form: lower-case name, unfolded value with runs of WSP as one space."""
    unfolded = _LINE_BREAK.sub(b"", value)
    return name.strip().lower() + b":" + _HEADER_WSP.sub(b" ", unfolded).strip(b" \t") + b"\r\n"
