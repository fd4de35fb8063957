"""Bench: relay.bounces.parse per message, beside the email package's own parse of the same bytes.

Runs over tests/data/bounces/*.eml, then over hostile inputs (the worst case is what one message
can cost the inbound listener). Usage: python bench/bounce_parse.py [seconds per figure]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from email import policy
from email.parser import BytesParser
from pathlib import Path

from relay.bounces.parse import parse

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "bounces"
_H = b"From: MAILER-DAEMON@x\nSubject: failure notice\n\n"
HOSTILE = {
    "300 KB line of dashes": _H + b"-" * 300_000,
    "300 KB of 'a@'": _H + b"a@" * 150_000,
    "5,000 DSN recipient blocks": (
        b'From: x@y\nMIME-Version: 1.0\nContent-Type: multipart/report; boundary="b"\n\n--b\n'
        b"Content-Type: message/delivery-status\n\n"
        + b"Final-Recipient: rfc822; a@b\nAction: failed\nStatus: 5.1.1\n\n" * 5000 + b"--b--\n"),
    "5,000 MIME parts": (b'From: x@y\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
                         + b"--b\nContent-Type: text/plain\n\nx\n" * 5000 + b"--b--\n"),
    "3,000 nested multiparts": b"From: a@example.org\nMIME-Version: 1.0\n" + b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i) for i in range(3000)),
    "20,000 header fields": b"".join(b"X-H%d: v\n" % i for i in range(20000)) + b"\nbody",
    "300 KB Subject": b"Subject: " + b"a " * 150_000 + b"\nFrom: MAILER-DAEMON@x\n\nx",
}


def per_message(fn: Callable[[bytes], object], messages: list[bytes], seconds: float) -> float:
    """Mean seconds per message over as many rounds as fit in `seconds`."""
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for raw in messages:
            fn(raw)
            count += 1
    return (time.perf_counter() - start) / count


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    files = [p.read_bytes() for p in sorted(DATA.glob("*.eml"))]
    reference = per_message(lambda raw: BytesParser(policy=policy.default).parsebytes(raw), files, seconds)
    ours = per_message(parse, files, seconds)
    print(f"{len(files)} test messages, mean per message:")
    print(f"  email BytesParser(policy.default) alone  {reference * 1e3:7.2f} ms")
    print(f"  relay.bounces.parse.parse                {ours * 1e3:7.2f} ms  ({ours / reference:.2f}x)")
    print("hostile inputs, one parse each:")
    for name, raw in HOSTILE.items():
        start = time.perf_counter()
        findings = parse(raw)
        print(f"  {name:28s} {time.perf_counter() - start:7.3f} s  -> {len(findings)} finding(s)")


if __name__ == "__main__":
    main()
