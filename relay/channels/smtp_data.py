"""The SMTP DATA reader: bulk reads, strict CRLF.CRLF, dot-unstuffing, the size limit and a total deadline."""

from __future__ import annotations

from typing import Protocol

from relay import hygiene


class DataTimeout(Exception):
    """The DATA phase went past its total deadline (smtp.data_timeout_seconds)."""


class DataStream(Protocol):
    """Where the DATA bytes come from: SmtpSession, or a test's scripted reads."""

    async def read(self, n: int, deadline: float | None = None) -> bytes:
        """Up to n bytes (b'' at end of stream); TimeoutError once the loop time passes deadline."""
        ...

    def unread(self, data: bytes | bytearray) -> None:
        """Give bytes back: the next read returns them first."""
        ...


async def read_data(stream: DataStream, *, limit: int, deadline: float) -> tuple[bytearray | None, bool, bool]:
    """(CRLF + data dot-unstuffed, or None when over the limit; saw a bare CR or LF; some line
    started with a dot).

    The message is data[2:]: the DATA line's CRLF stays in front, where the in-place header
    edit overwrites it (deleting it would make that edit copy the whole buffer). deadline is a
    loop time: a total deadline, since the idle timer restarts on every byte and a trickle
    would outlive it (DataTimeout). Bytes after the end marker (pipelined commands) are given
    back to the stream.
    """
    # the CRLF that ended the DATA line: lets a first line of "." end an empty message
    buf = bytearray(b"\r\n")
    search_from = 0
    dropped = 0
    dots = 0  # dot-stuffed lines: their extra dot counts in no size (RFC 1870)
    # Per chunk, one search for the end marker and one count of dot-stuffed lines (every
    # line that starts with a dot is a CRLF "." in buf); no Python step per line, so a
    # message of nothing but dot lines costs what any other does. Both need a dot, and a
    # search for one byte (memchr) is ~50x faster than theirs: a stretch without any dot,
    # like most of a base64 attachment, is passed over at that speed.
    while True:
        first_dot = buf.find(b".", search_from)
        if first_dot >= 0:
            search_from = max(search_from, first_dot - 2)
            end = buf.find(b"\r\n.\r\n", search_from)
            if end >= 0:
                dots += buf.count(b"\r\n.", search_from, end)
                break
        # a CRLF "." starting in the last 4 bytes may still turn out to be the end marker:
        # those are looked at again with the next chunk; every one before is a dot line
        undecided = max(search_from, len(buf) - 4)
        if first_dot >= 0:
            dots += buf.count(b"\r\n.", search_from, undecided + 2)
        search_from = undecided
        if len(buf) + dropped - dots > limit + 5:
            # over the limit: keep reading to the end marker, but stop keeping the data
            dropped += search_from
            del buf[:search_from]
            search_from = 0
        try:
            chunk = await stream.read(1 << 18, deadline)
        except TimeoutError:
            raise DataTimeout from None
        if not chunk:
            raise ConnectionResetError("connection closed during DATA")
        buf += chunk
    leftover = buf[end + 5:]
    if leftover:  # pipelined commands after the end marker go back to the command reader
        stream.unread(leftover)
    if dropped or end - dots > limit:
        return None, False, dots > 0
    del buf[end + 2:]
    # unstuff (the leading CRLF lets a dot on the first line unstuff too), copying only when a
    # line does start with a dot
    data = buf.replace(b"\r\n.", b"\r\n") if dots else buf
    del buf
    return data, hygiene.has_bare_cr_or_lf(data), dots > 0  # the leading CRLF is a pair
