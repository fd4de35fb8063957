"""A light raw SMTP load generator (bench/compare.py), for large and small messages.

aiosmtplib normalizes line endings of the whole message with a regular expression on every send,
which for a 9.5 MB message saturates a core in the generator alone, and with 2 KB messages costs
about as much CPU per message as the server it measures. This client speaks EHLO, AUTH PLAIN, then
per message MAIL, RCPT, DATA and writes a precomputed, dot-stuffed body in one write; `load` keeps a
connection per client (large messages); `small_load` is leaner still (an asyncio Protocol counting
reply codes) and keeps its connections or opens one per message.

Run as a script it is one generator process (compare.py starts several, so that the generator is
never the bottleneck on a small machine) and prints one JSON line: messages, failures, latencies
and the CPU seconds it used while sending.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time

OP_TIMEOUT = 120.0  # seconds for any one reply, or (small_load) one message's whole exchange


class SMTPReplyError(Exception):
    pass


def dot_stuffed(message: bytes) -> bytes:
    """The DATA payload: CRLF line ends assumed, leading dots doubled, ending with CRLF.CRLF."""
    body = message if message.endswith(b"\r\n") else message + b"\r\n"
    if body.startswith(b"."):
        body = b"." + body
    return body.replace(b"\r\n.", b"\r\n..") + b".\r\n"


class RawSMTP:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, user: str, password: str) -> RawSMTP:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), OP_TIMEOUT)
        client = cls(reader, writer)
        try:
            await client.expect(220)
            await client.command(b"EHLO bench.client", 250)
            token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
            await client.command(b"AUTH PLAIN " + token, 235)
        except BaseException:
            client.close()
            raise
        return client

    async def reply(self) -> tuple[int, bytes]:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), OP_TIMEOUT)
            if not line:
                raise ConnectionError("connection closed by the server")
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), b"".join(lines)

    async def expect(self, code: int) -> None:
        got, text = await self.reply()
        if got != code:
            raise SMTPReplyError(f"expected {code}, got {text.decode(errors='replace').strip()}")

    async def command(self, line: bytes, code: int) -> None:
        self.writer.write(line + b"\r\n")
        await self.expect(code)

    async def send(self, sender: str, recipient: str, payload: bytes) -> None:
        """One transaction; `payload` as made by dot_stuffed()."""
        await self.command(f"MAIL FROM:<{sender}> SIZE={len(payload)}".encode(), 250)
        await self.command(f"RCPT TO:<{recipient}>".encode(), 250)
        await self.command(b"DATA", 354)
        self.writer.write(payload)
        await asyncio.wait_for(self.writer.drain(), OP_TIMEOUT)
        await self.expect(250)

    async def quit(self) -> None:
        with contextlib.suppress(Exception):
            await self.command(b"QUIT", 221)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


async def load(port: int, user: str, password: str, sender: str, payload: bytes, clients: int,
               seconds: float) -> tuple[int, int, list[float], float]:
    """`clients` connections sending `payload` until `seconds` have passed (a message started
    before then is finished). (messages accepted, failures, latencies in seconds, wall time until
    the last client finished)."""
    latencies: list[float] = []
    failures = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        nonlocal failures
        client: RawSMTP | None = None
        while time.perf_counter() < deadline:
            try:
                if client is None:
                    client = await RawSMTP.open(port, user, password)
                begun = time.perf_counter()
                await client.send(sender, "rcpt@dest.test", payload)
                latencies.append(time.perf_counter() - begun)
            except (OSError, EOFError, SMTPReplyError, TimeoutError, ValueError, asyncio.LimitOverrunError):
                failures += 1
                if client is not None:
                    client.close()
                client = None
                await asyncio.sleep(0.1)
        if client is not None:
            await client.quit()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return len(latencies), failures, latencies, time.perf_counter() - started


class _Replies(asyncio.Protocol):
    """A connection that collects reply codes: `wait(n)` resolves with the codes of the next n
    complete replies (a multi-line reply counts once, at its last line). No StreamReader, no
    per-line await: the cheapest client asyncio allows, so that the generator stays small beside
    the server it measures."""

    def __init__(self) -> None:
        self.buffer = b""
        self.codes: list[int] = []
        self.want = 0
        self.waiter: asyncio.Future[list[int]] | None = None
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        start = 0
        while (end := buffer.find(b"\r\n", start)) >= 0:
            if buffer[start + 3:start + 4] != b"-":
                self.codes.append(int(buffer[start:start + 3]))
            start = end + 2
        self.buffer = buffer[start:]
        self._deliver()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed by the server"))

    def _deliver(self) -> None:
        if self.waiter is not None and len(self.codes) >= self.want and not self.waiter.done():
            got, self.codes = self.codes[:self.want], self.codes[self.want:]
            self.waiter.set_result(got)

    async def send(self, data: bytes, replies: int, expect: tuple[int, ...]) -> None:
        """Write `data`, then wait for `replies` replies with the codes in `expect`, in order."""
        assert self.transport is not None
        if data:
            self.transport.write(data)
        self.want, self.waiter = replies, asyncio.get_running_loop().create_future()
        self._deliver()
        got = await self.waiter  # the caller's asyncio.timeout bounds the whole exchange (one timer)
        if tuple(got) != expect:
            raise SMTPReplyError(f"expected {expect}, got {got}")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def small_load(port: int, user: str, password: str, sender: str, payload: bytes, clients: int,
                     seconds: float, reuse: bool, messages: int = 0, auth_code: int = 235,
                     pipelining: bool = False) -> tuple[int, int, list[float], float]:
    """`clients` clients sending `payload` (a new connection per message unless `reuse`) for
    `seconds`, or until `messages` have been sent when it is not 0. Returns what `load` does; a
    message's latency includes its connection's setup and QUIT when not reusing. With `pipelining`
    (RFC 2920, both Postfix and relay advertise it) MAIL, RCPT and DATA go in one write, and QUIT
    right after the message's final dot; without it each command waits for its reply, like
    aiosmtplib and smtplib."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    failures = 0
    left = messages
    started = time.perf_counter()
    deadline = started + seconds
    login = b"EHLO bench.client\r\n", b"AUTH PLAIN " + base64.b64encode(
        b"\0" + user.encode() + b"\0" + password.encode()) + b"\r\n"
    mail, rcpt = f"MAIL FROM:<{sender}>\r\n".encode(), b"RCPT TO:<rcpt@dest.test>\r\n"

    def more() -> bool:
        nonlocal left
        if messages:
            left -= 1
            return left >= 0
        return time.perf_counter() < deadline

    async def open_() -> _Replies:
        _, conn = await loop.create_connection(_Replies, "127.0.0.1", port)
        try:
            await conn.send(b"", 1, (220,))
            await conn.send(login[0], 1, (250,))
            await conn.send(login[1], 1, (auth_code,))
        except BaseException:
            conn.close()
            raise
        return conn

    async def transaction(conn: _Replies, quit_: bool) -> None:
        if pipelining:
            await conn.send(mail + rcpt + b"DATA\r\n", 3, (250, 250, 354))
        else:
            await conn.send(mail, 1, (250,))
            await conn.send(rcpt, 1, (250,))
            await conn.send(b"DATA\r\n", 1, (354,))
        if quit_ and pipelining:
            await conn.send(payload + b"QUIT\r\n", 2, (250, 221))
        else:
            await conn.send(payload, 1, (250,))
            if quit_:
                await conn.send(b"QUIT\r\n", 1, (221,))

    async def worker() -> None:
        nonlocal failures
        conn: _Replies | None = None
        while more():
            begun = time.perf_counter()
            try:
                # one timer per message, not one per reply: the generator's own CPU stays small
                async with asyncio.timeout(OP_TIMEOUT):
                    if conn is None:
                        conn = await open_()
                    await transaction(conn, not reuse)
                if not reuse:
                    conn.close()
                    conn = None
                latencies.append(time.perf_counter() - begun)
            except (OSError, SMTPReplyError, TimeoutError, ValueError):
                failures += 1
                if conn is not None:
                    conn.close()
                conn = None
                await asyncio.sleep(0.05)
        if conn is not None:
            with contextlib.suppress(OSError, SMTPReplyError, TimeoutError):
                async with asyncio.timeout(OP_TIMEOUT):
                    await conn.send(b"QUIT\r\n", 1, (221,))
            conn.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return len(latencies), failures, latencies, time.perf_counter() - started


def main() -> None:
    """One generator process: arguments in, one JSON line out."""
    import argparse
    import json
    import os

    import uvloop

    parser = argparse.ArgumentParser(description="one small-message SMTP generator process")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--sender", required=True)
    parser.add_argument("--payload", required=True, help="file holding the dot-stuffed DATA payload")
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--messages", type=int, default=0, help="send this many, then stop (0: by time)")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--auth-250", action="store_true", help="accept 250 to AUTH (smtp-sink)")
    parser.add_argument("--pipelining", action="store_true", help="MAIL RCPT DATA in one write (RFC 2920)")
    parser.add_argument("--out", required=True, help="file to write the JSON result to")
    parser.add_argument("--start-at", type=float, default=0.0, help="time.time() to begin at (all generators)")
    args = parser.parse_args()
    with open(args.payload, "rb") as f:
        payload = f.read()
    if args.start_at:
        time.sleep(max(0.0, args.start_at - time.time()))
    cpu = os.times()
    sent, failed, lat, wall = uvloop.run(small_load(
        args.port, args.user, args.password, args.sender, payload, args.clients, args.seconds, args.reuse,
        args.messages, 250 if args.auth_250 else 235, args.pipelining))
    used = os.times()
    with open(args.out, "w") as f:  # not stdout: the event loop may have left it non-blocking
        json.dump({"sent": sent, "failures": failed, "latencies": lat, "wall": wall,
                   "cpu": used.user + used.system - cpu.user - cpu.system}, f)


if __name__ == "__main__":
    main()
