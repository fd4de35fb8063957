"""A light raw SMTP load generator for large messages (bench/compare.py).

aiosmtplib normalizes line endings of the whole message with a regular expression on every send,
which for a 9.5 MB message saturates a core in the generator alone. This client speaks EHLO,
AUTH PLAIN, then per message MAIL, RCPT, DATA and writes a precomputed, dot-stuffed body in one
write; each client keeps one connection for all its messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time

OP_TIMEOUT = 120.0  # seconds for any one reply (a 9.5 MB DATA under load included)


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
