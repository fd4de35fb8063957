"""Small helpers for driving the relay over SMTP in tests."""

from __future__ import annotations

import asyncio

import aiosmtplib


def message(sender: str, to: str = "rcpt@dest.test", body: str = "hello\r\n", *,
            extra_headers: str = "", from_header: str | None = None) -> bytes:
    """A small RFC 5322 message with CRLF line endings."""
    head = f"From: {from_header or sender}\r\nTo: {to}\r\nSubject: test\r\n{extra_headers}"
    return f"{head}\r\n{body}".encode()


async def login(port: int, key: str, **kwargs: object) -> aiosmtplib.SMTP:
    """An aiosmtplib client connected to the relay and authenticated."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10, **kwargs)
    await client.connect()
    await client.login("app", key)
    return client


async def send(port: int, key: str, sender: str, recipients: list[str], data: bytes) -> aiosmtplib.SMTPResponse:
    """Send one message in its own connection; returns the DATA reply or raises the client's error."""
    client = await login(port, key)
    try:
        await client.mail(sender)
        for r in recipients:
            await client.rcpt(r)
        return await client.data(data)
    finally:
        client.close()


class Raw:
    """A raw SMTP conversation over a socket, for what client libraries refuse to send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw = cls(reader, writer)
        await raw.reply()
        return raw

    async def reply(self, timeout: float = 10) -> str:
        """One whole (possibly multi-line) reply."""
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), timeout)).decode()
            if not line:
                return "".join(lines) or "<closed>"
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "".join(lines)

    async def cmd(self, text: str | bytes) -> str:
        self.writer.write(text if isinstance(text, bytes) else (text + "\r\n").encode())
        await self.writer.drain()
        return await self.reply()

    async def auth(self, key: str) -> str:
        import base64
        await self.cmd("EHLO client.test")
        token = base64.b64encode(b"\0app\0" + key.encode()).decode()
        return await self.cmd(f"AUTH PLAIN {token}")

    async def begin_data(self, key: str, sender: str, recipient: str = "a@dest.test") -> None:
        """AUTH, MAIL, RCPT and DATA, each checked, so the next bytes written are message data."""
        assert (await self.auth(key)).startswith("235")
        assert (await self.cmd(f"MAIL FROM:<{sender}>")).startswith("250")
        assert (await self.cmd(f"RCPT TO:<{recipient}>")).startswith("250")
        assert (await self.cmd("DATA")).startswith("354")

    async def closed(self, timeout: float = 5) -> bool:
        """True when the server has closed the connection."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except (ConnectionError, TimeoutError):
            return False
        return data == b""

    def close(self) -> None:
        self.writer.close()
