"""Attachment composition: a send request with a 9 MB attachment, from request bytes to the MIME bytes
relayed (JSON decode, base64 decode and checks, compose), CPU and peak memory, beside a reference.

The reference, in the same run, is the email package doing the same composition the usual way
(EmailMessage.set_content + add_attachment, then as_bytes with the same 7bit SMTP policy), from the
same decoded request. CPU is the median process time over --rounds runs; peak memory is the peak of
Python allocations during one run (tracemalloc, a separate run so it does not slow the timing),
shown beside the size of the request body and of the attachment.

    python bench/attachment_bench.py [--mb 9] [--rounds 5]
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay import compose, mime


def request_body(size: int) -> bytes:
    payload = os.urandom(size)
    return json.dumps({
        "from": "app@example.com", "to": ["rcpt@dest.test"], "subject": "Your invoice",
        "text": "Please find the invoice attached.", "html": "<p>Please find the invoice attached.</p>",
        "attachments": [{"filename": "invoice-2026-11.pdf", "content": base64.b64encode(payload).decode()}],
    }).encode()


def relay_path(body: bytes) -> bytes:
    """What POST /v1/send does with the body: decode, check, compose."""
    request = compose.parse_request(compose.decode_body(body), max_recipients=100)
    return compose.compose(request, hostname="relay.bench")


def email_package(body: bytes) -> bytes:
    """The reference: the same message through EmailMessage."""
    doc = json.loads(body)
    message = EmailMessage(policy=mime.POLICY)
    message["From"], message["To"], message["Subject"] = doc["from"], doc["to"][0], doc["subject"]
    message.set_content(doc["text"])
    message.add_alternative(doc["html"], subtype="html")
    for att in doc["attachments"]:
        message.add_attachment(base64.b64decode(att["content"]), maintype="application", subtype="pdf",
                               filename=att["filename"])
    return message.as_bytes()


def cpu(work: Callable[[bytes], bytes], body: bytes, rounds: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(rounds):
        gc.collect()
        started = time.process_time()
        size = len(work(body))
        times.append(time.process_time() - started)
    return statistics.median(times), size


def peak(work: Callable[[bytes], bytes], body: bytes) -> int:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    result = work(body)
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    return top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=9.0, help="attachment size in MiB (default 9)")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per target (default 5)")
    args = parser.parse_args()
    size = int(args.mb * (1 << 20))
    body = request_body(size)
    mb = 1 << 20
    print(f"attachment {size / mb:.1f} MiB, request body {len(body) / mb:.1f} MiB, {args.rounds} rounds, "
          f"Python {sys.version.split()[0]}")
    print(f"{'target':24} {'CPU ms':>8} {'peak MiB':>9} {'peak / attachment':>18} {'message MiB':>12}")
    for name, work in (("relay (compose + mime)", relay_path), ("email package (ref.)", email_package)):
        seconds, out = cpu(work, body, args.rounds)
        top = peak(work, body)
        print(f"{name:24} {seconds * 1000:8.0f} {top / mb:9.1f} {top / size:17.1f}x {out / mb:12.1f}")


if __name__ == "__main__":
    main()
