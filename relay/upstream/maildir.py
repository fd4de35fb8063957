"""The development upstream: every accepted message becomes a standard Maildir file."""

from __future__ import annotations

import asyncio
import mailbox
from collections.abc import Sequence
from pathlib import Path

from relay import hygiene
from relay.upstream.base import Delivery, Verdict
from relay.upstream.classify import FailureCode


class MaildirUpstream:
    """Writes tmp/ then renames into new/, as Maildir readers expect; the envelope goes in headers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._box = mailbox.Maildir(str(self.path), create=True)
        self._busy = 0

    @property
    def in_use(self) -> int:
        """Writes in progress."""
        return self._busy

    def _write(self, mail_from: str, recipients: Sequence[str], data: bytes | bytearray) -> str:
        # Return-Path keeps the envelope sender; X-Original-To names only the recipients the
        # header already shows, so a Bcc recipient is not revealed to whoever reads the file
        header = hygiene.header_section(data).lower()
        shown = [r for r in recipients if r.lower().encode("utf-8", "replace") in header]
        envelope = f"Return-Path: <{mail_from}>\r\n"
        if shown:
            envelope += f"X-Original-To: {', '.join(shown)}\r\n"
        return self._box.add(envelope.encode() + data)

    async def deliver(self, mail_from: str, recipients: Sequence[str], data: bytes | bytearray, *,
                      crlf_verified: bool = False, dot_free: bool = False, body_8bit: bool | None = None,
                      smtputf8: bool = False) -> Delivery:
        """Write the message; a full disk or similar is a transient failure.

        A file takes any bytes: 8-bit content and UTF-8 addresses are stored as they are, so
        body_8bit and smtputf8 change nothing here (the envelope headers are written in UTF-8).
        """
        self._busy += 1
        try:
            key = await asyncio.to_thread(self._write, mail_from, recipients, data)
        except OSError as exc:
            return Delivery(Verdict.TRANSIENT, f"maildir write failed: {exc.strerror}",
                            int(FailureCode.SYSTEM_OTHER))
        finally:
            self._busy -= 1
        return Delivery(Verdict.SENT, f"250 2.0.0 stored in maildir as {key}")

    async def close(self) -> None:
        """Nothing to release."""
