"""DKIM signing benchmark: relay's signer beside dkimpy's, per message, in one run.

For a 2 KB text message and a 9.5 MiB message (a base64 attachment, and a worst case of text that
needs whitespace rewritten on every line), prints the CPU per message of:

- relay.dkim.sign with RSA-2048, with Ed25519, and with both (one body hash shared);
- its parts: the body hash alone, and the RSA operation alone;
- dkimpy's dkim.sign (RSA-2048, relaxed/relaxed, same headers), the reference;

and then how long the event loop is held: the longest single inline sign() of a 2 KB message, the
CPU the loop's own thread spends per message with sign() inline versus in the signing threads
(the OFFLOAD_BYTES decision), and the longest gap a 1 ms ticker sees while 9.5 MiB messages are
signed either way.

    python bench/dkim_bench.py [--small 2000] [--large 20]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from relay.dkim import keys
from relay.dkim.canon import hash_relaxed_body
from relay.dkim.sign import OFFLOAD_BYTES, SigningKey, sign, sign_async

HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"]


def message(size: int, kind: str) -> bytes:
    """A message of about size bytes: text, a base64 attachment, or whitespace-heavy text."""
    msg = EmailMessage()
    msg["From"] = "App <app@example.com>"
    msg["To"] = "user@example.net"
    msg["Subject"] = "Benchmark message"
    msg["Date"] = "Mon, 01 Jan 2024 10:00:00 +0000"
    msg["Message-ID"] = "<bench@example.com>"
    if kind == "attachment":
        msg.set_content("See attached.\n")
        msg.add_attachment(os.urandom(size * 3 // 4), maintype="application", subtype="octet-stream",
                           filename="blob.bin")
    elif kind == "spaced":
        line = "word  with\tdouble  spaces and a trailing blank \n"
        msg.set_content(line * (size // len(line)), cte="8bit")
    else:
        line = "The quick brown fox jumps over the lazy dog, again and again.\n"
        msg.set_content(line * (size // len(line)), cte="8bit")
    return msg.as_bytes(policy=SMTP)


def cpu_ms(fn: Callable[[], object], count: int) -> float:
    """CPU milliseconds per call, over count calls after one warm-up."""
    fn()
    start = time.process_time()
    for _ in range(count):
        fn()
    return (time.process_time() - start) * 1000 / count


def max_wall_ms(fn: Callable[[], object], count: int) -> tuple[float, float]:
    """p50 and max wall milliseconds of single calls."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


async def loop_thread_ms(data: bytes, key: SigningKey, offload_bytes: int, count: int) -> float:
    """CPU ms per message that the event loop's thread itself spends in sign_async."""
    await sign_async(data, [key], offload_bytes=offload_bytes)
    start = time.thread_time()
    for _ in range(count):
        await sign_async(data, [key], offload_bytes=offload_bytes)
    return (time.thread_time() - start) * 1000 / count


async def loop_gap_ms(data: bytes, key: SigningKey, offload_bytes: int, count: int) -> float:
    """The longest gap a 1 ms ticker sees while count messages are signed through sign_async."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append((now - last) * 1000 - 1)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    for _ in range(count):
        await sign_async(data, [key], offload_bytes=offload_bytes)
        await asyncio.sleep(0)
    done.set()
    await task
    return max(gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=2000, help="2 KB messages signed per figure")
    parser.add_argument("--large", type=int, default=20, help="9.5 MiB messages signed per figure")
    args = parser.parse_args()

    rsa_key = keys.generate("rsa-sha256")
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    ed_key = keys.generate("ed25519-sha256")
    rsa_signer = SigningKey("example.com", "rsa1", rsa_key)
    ed_signer = SigningKey("example.com", "ed1", ed_key)
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())

    cases = [("2 KB text", message(2048, "text"), args.small),
             ("9.5 MiB base64 attachment", message(int(9.5 * 1024 * 1024), "attachment"), args.large),
             ("9.5 MiB text, whitespace to rewrite", message(int(9.5 * 1024 * 1024), "spaced"), args.large)]
    print(f"DKIM signing, CPU ms per message (python {sys.version.split()[0]}, {os.cpu_count()} cores)")
    print(f"{'message':38} {'relay rsa':>10} {'relay ed':>9} {'relay both':>10} {'body hash':>10} "
          f"{'rsa op':>7} {'dkimpy rsa':>11} {'dkimpy/relay':>13}")
    for label, data, count in cases:
        body_start = data.index(b"\r\n\r\n") + 4
        dkimpy_count = max(1, count // 10)
        ours = cpu_ms(lambda d=data: sign(d, [rsa_signer]), count)
        ed = cpu_ms(lambda d=data: sign(d, [ed_signer]), count)
        both = cpu_ms(lambda d=data: sign(d, [rsa_signer, ed_signer]), count)
        body = cpu_ms(lambda d=data, s=body_start: hash_relaxed_body(d, s, hashlib.sha256()), count)
        rsa_op = cpu_ms(lambda: rsa_key.sign(b"x" * 600, padding.PKCS1v15(), hashes.SHA256()), count)
        theirs = cpu_ms(lambda d=data: dkim.sign(d, b"rsa1", b"example.com", pem,
                                                 canonicalize=(b"relaxed", b"relaxed"), include_headers=HEADERS),
                        dkimpy_count)
        print(f"{label:38} {ours:10.3f} {ed:9.3f} {both:10.3f} {body:10.3f} {rsa_op:7.3f} {theirs:11.3f} "
              f"{theirs / ours:12.1f}x")

    small, large = cases[0][1], cases[1][1]
    p50, worst = max_wall_ms(lambda: sign(small, [rsa_signer]), args.small)
    print(f"\ninline sign() of 2 KB, RSA: p50 {p50:.3f} ms, max {worst:.3f} ms of wall time holding the loop")
    print("\nsign_async(), CPU ms per message spent on the event loop's own thread (time.thread_time):")
    for label, data, count in (("2 KB", small, args.small), ("9.5 MiB", large, args.large)):
        inline = asyncio.run(loop_thread_ms(data, rsa_signer, len(data) + 1, count))
        offloaded = asyncio.run(loop_thread_ms(data, rsa_signer, OFFLOAD_BYTES, count))
        print(f"  {label:8} inline {inline:8.3f}   in the signing threads {offloaded:8.3f}")
    inline_gap = asyncio.run(loop_gap_ms(large, rsa_signer, len(large) + 1, args.large))
    offloaded_gap = asyncio.run(loop_gap_ms(large, rsa_signer, OFFLOAD_BYTES, args.large))
    print(f"\n9.5 MiB through sign_async: longest event-loop stall {inline_gap:.2f} ms inline, "
          f"{offloaded_gap:.2f} ms in the signing threads")


if __name__ == "__main__":
    main()
