"""The bytes level of our SMTP client: an asyncio protocol that writes commands and parses replies.

It keeps every reply it parses, in order, so the replies to commands written together (RFC 2920
PIPELINING) are never lost however the server's segments cut them; the conversation itself
(which command, which reply means what) is relay.upstream.client's.
"""

from __future__ import annotations

import asyncio
import collections
from typing import NamedTuple, cast

from relay.errors import RelayError

MAX_LINE = 8192  # one reply line; RFC 5321 says 512, servers' EHLO lines run longer
MAX_REPLY = 4 * MAX_LINE  # a whole multi-line reply: bounds memory against an endless one


class Reply(NamedTuple):
    """One SMTP reply: its code and its text, the lines of a multi-line reply joined by newlines."""

    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.code} {' '.join(self.message.split())}"


class WireError(RelayError):
    """The connection cannot carry on: it was lost, or the server said something that is no reply."""


class ConnectionLost(WireError):
    """The server hung up, or the connection broke."""


class MalformedReply(WireError):
    """Bytes that are not an SMTP reply: the replies behind them no longer pair with commands."""


class ReplyProtocol(asyncio.Protocol):
    """Writes what it is given; parses what arrives into Replies and hands them out in order.

    Errors are sticky: once the connection is lost or a reply is malformed, every later read
    raises, because nothing read afterwards could be trusted to answer the command it seems to.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._lines: list[str] = []  # the lines so far of a multi-line reply
        self._reply_bytes = 0  # and their size on the wire
        self._replies: collections.deque[Reply] = collections.deque()
        self._error: WireError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = 0

    @property
    def usable(self) -> bool:
        """Connected, and nothing has gone wrong on the wire."""
        return self._error is None and self.transport is not None and not self.transport.is_closing()

    # asyncio's callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._buffer += data
        try:
            self._parse()
        except MalformedReply as exc:
            self._fail(exc)
            return
        if self._waiter is not None and len(self._replies) >= self._wanted and not self._waiter.done():
            self._waiter.set_result(None)

    def eof_received(self) -> bool:
        self._fail(ConnectionLost("the upstream closed the connection"))
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionLost(f"connection lost: {exc}" if exc else "connection lost"))

    # for the client --------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send bytes; replies that arrived unasked before now are dropped (they answer nothing
        this client is going to read, and must not be taken for the answer to what follows)."""
        if self._error is not None:
            raise self._error
        if self.transport is None or self.transport.is_closing():
            raise ConnectionLost("not connected")
        self._replies.clear()
        self.transport.write(data)

    async def read(self, count: int = 1) -> list[Reply]:
        """The next count replies, in order; waits for them to arrive."""
        while len(self._replies) < count:
            if self._error is not None:
                raise self._error
            self._wanted = count
            self._waiter = waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return [self._replies.popleft() for _ in range(count)]

    def reset_buffer(self) -> None:
        """Forget unread bytes and replies: after STARTTLS nothing sent in plaintext may count
        (RFC 3207: a reply injected before the handshake must not be read as coming through TLS)."""
        self._buffer.clear()
        self._lines.clear()
        self._reply_bytes = 0
        self._replies.clear()

    def close(self) -> None:
        """Hang up at once (no QUIT)."""
        if self.transport is not None:
            self.transport.close()
        self._fail(ConnectionLost("closed by the relay"))

    # internals -------------------------------------------------------------------------------

    def _fail(self, error: WireError) -> None:
        if self._error is None:
            self._error = error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)  # read() raises the error it finds

    def _parse(self) -> None:
        buffer = self._buffer
        start = 0
        try:
            while (end := buffer.find(b"\n", start)) >= 0:
                line = bytes(buffer[start:end]).rstrip(b"\r")
                start = end + 1
                self._line(line)
        finally:
            del buffer[:start]
        if len(buffer) > MAX_LINE:
            raise MalformedReply(f"reply line longer than {MAX_LINE} bytes")

    def _line(self, line: bytes) -> None:
        code = line[:3]
        separator = line[3:4]
        if len(line) > MAX_LINE or not (code.isdigit() and len(code) == 3) or separator not in (b"", b" ", b"-"):
            raise MalformedReply(f"malformed reply line: {line[:100].decode('utf-8', 'replace')!r}")
        text = line[4:].strip(b" \t").decode("utf-8", "replace")
        if separator == b"-":
            self._lines.append(text)
            self._reply_bytes += len(line)
            if self._reply_bytes > MAX_REPLY:
                raise MalformedReply(f"reply longer than {MAX_REPLY} bytes")
            return
        if self._lines:
            self._lines.append(text)
            text = "\n".join(self._lines)
            self._lines.clear()
            self._reply_bytes = 0
        self._replies.append(Reply(int(code), text))
