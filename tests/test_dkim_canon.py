"""Relaxed canonicalization as walked in chunks equals the plain definition (RFC 6376 3.4.2, 3.4.4) and dkimpy."""

from __future__ import annotations

import hashlib
import re

from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.dkim.canon import content_end, hash_relaxed_body, relaxed_header


class Collect:
    """A hasher stand-in that keeps what it is fed, so a mismatch shows the bytes."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        self.parts.append(bytes(data))

    def value(self) -> bytes:
        return b"".join(self.parts)


def plain_relaxed_body(body: bytes) -> bytes:
    """The RFC's words, line by line: WSP runs to one space, none at line ends, no empty lines at the end."""
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"  # what SMTP's DATA does to a body without a final CRLF
    lines = body.split(b"\r\n")[:-1]
    lines = [re.sub(rb"[ \t]+", b" ", line).rstrip(b" \t") for line in lines]
    while lines and lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def walked(data: bytes, start: int, chunk: int, block: int) -> bytes:
    collect = Collect()
    hash_relaxed_body(data, start, collect, chunk_bytes=chunk, tail_block_bytes=block)
    return collect.value()


_PIECES = [b"a", b"Zz", b" ", b"  ", b"\t", b"\r\n", b"\r\n", b"\r", b"\n", b".", b"\xe9", b"=\r\n"]
bodies = st.lists(st.sampled_from(_PIECES), max_size=60).map(b"".join)


@settings(max_examples=1500, deadline=None)
@given(body=bodies, prefix=st.sampled_from([b"", b"Subject: x\r\n\r\n"]), chunk=st.integers(1, 40),
       block=st.integers(1, 12))
def test_walk_equals_plain_definition(body: bytes, prefix: bytes, chunk: int, block: int) -> None:
    assert walked(prefix + body, len(prefix), chunk, block) == plain_relaxed_body(body)


@settings(max_examples=1000, deadline=None)
@given(body=bodies)
def test_walk_equals_dkimpy_on_crlf_terminated_bodies(body: bytes) -> None:
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"  # dkimpy keeps trailing WSP of an unterminated last line; SMTP never sends one
    assert walked(body, 0, 7, 3) == Relaxed.canonicalize_body(body)


@settings(max_examples=500, deadline=None)
@given(body=bodies, bytes_type=st.sampled_from([bytes, bytearray]))
def test_default_chunking_hashes_the_same(body: bytes, bytes_type: type) -> None:
    data = bytes_type(body)
    hasher = hashlib.sha256()
    hash_relaxed_body(data, 0, hasher)
    assert hasher.digest() == hashlib.sha256(plain_relaxed_body(body)).digest()
    assert data == body  # the message is never changed in place


def test_large_body_across_many_chunks() -> None:
    line = b"word  word\t \r\n" + b"QUJD" * 19 + b"\r\n"
    body = line * 40_000 + b"\r\n \r\n\t\r\n"  # about 3.6 MB, with blank lines at the end
    hasher = hashlib.sha256()
    hash_relaxed_body(body, 0, hasher)
    assert hasher.digest() == hashlib.sha256(plain_relaxed_body(body)).digest()


def test_content_end_skips_a_long_blank_tail_in_blocks() -> None:
    body = b"text\r\n" + b" \r\n" * 10_000
    assert content_end(body, 0, len(body)) == 4
    assert content_end(b" \r\n\t", 0, 4) == 0
    assert content_end(b"x\r\n", 1, 3) == 1


@given(name=st.sampled_from([b"Subject", b"SUBJECT", b"To"]),
       value=st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n ", b"\r\n\t", b"b c"]), max_size=12).map(b"".join))
def test_relaxed_header_equals_dkimpy(name: bytes, value: bytes) -> None:
    ours = relaxed_header(name, value)
    [(their_name, their_value)] = Relaxed.canonicalize_headers([(name, value + b"\r\n")])
    assert ours == their_name + b":" + their_value
