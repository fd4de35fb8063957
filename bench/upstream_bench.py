"""Upstream client benchmark: relay's SmtpUpstream.deliver beside aiosmtplib's public sendmail, same sink.

Both clients send the same messages to the same sink (bench/smtp_bench.py's, in a child process on
127.0.0.1, offering PIPELINING) over N pooled connections, alternating within each round. Prints
messages/s and this process's CPU per message (the client side only: no PostgreSQL, no server).

    python bench/upstream_bench.py [--clients 10] [--seconds 5] [--rounds 2] [--size 2048] [--uvloop]

To compare two versions of relay's client, run it with PYTHONPATH pointing at the other tree.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import smtp_bench

import relay.upstream.smtp

Send = Callable[[], Awaitable[bool]]


async def relay_client(port: int, clients: int, data: bytes) -> tuple[Send, Callable[[], Awaitable[None]]]:
    upstream = relay.upstream.smtp.SmtpUpstream(f"smtp://127.0.0.1:{port}", pool_size=clients, timeout=30,
                                                local_hostname="bench.test")

    async def send() -> bool:
        delivery = await upstream.deliver("bench@example.com", ["rcpt@dest.test"], data, crlf_verified=True,
                                          dot_free=True)
        return delivery.verdict.value == "sent"

    return send, upstream.close


async def aiosmtplib_client(port: int, clients: int, data: bytes) -> tuple[Send, Callable[[], Awaitable[None]]]:
    import aiosmtplib

    pool: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
    for _ in range(clients):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30,
                                 local_hostname="bench.test")
        await client.connect()
        pool.put_nowait(client)

    async def send() -> bool:
        client = await pool.get()
        try:
            errors, _reply = await client.sendmail("bench@example.com", ["rcpt@dest.test"], data)
            return not errors
        finally:
            pool.put_nowait(client)

    async def close() -> None:
        while not pool.empty():
            await pool.get_nowait().quit()

    return send, close


async def run(make: Callable[[int, int, bytes], Awaitable[tuple[Send, Callable[[], Awaitable[None]]]]],
              port: int, clients: int, seconds: float, data: bytes) -> tuple[int, float, float]:
    """(messages sent, seconds, CPU seconds of this process) for one client kind."""
    send, close = await make(port, clients, data)
    await send()  # connections up, EHLO done: not measured
    sent = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal sent
        while time.perf_counter() < deadline:
            if await send():
                sent += 1

    cpu, started = smtp_bench.cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed, used = time.perf_counter() - started, smtp_bench.cpu_seconds() - cpu
    await close()
    return sent, elapsed, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--uvloop", action="store_true", help="run the clients on uvloop, as relay serve does")
    args = parser.parse_args()
    port = smtp_bench.free_port()
    sink = subprocess.Popen([sys.executable, str(smtp_bench.HERE), "--child", "sink", "--port", str(port)])
    try:
        smtp_bench.wait_port(port)
        data = smtp_bench.make_message("bench@example.com", args.size)
        runner: Callable[[Awaitable[tuple[int, float, float]]], tuple[int, float, float]] = asyncio.run
        if args.uvloop:
            import uvloop
            runner = uvloop.run
        print(f"relay.upstream.smtp from {Path(relay.upstream.smtp.__file__).parent.parent.parent}; "
              f"{args.clients} connections, {len(data)}-byte messages, {args.seconds:g}s per run, "
              f"{'uvloop' if args.uvloop else 'asyncio'}; load average {os.getloadavg()[0]:.2f}", flush=True)
        kinds = {"relay SmtpUpstream": relay_client, "aiosmtplib sendmail": aiosmtplib_client}
        for round_ in range(args.rounds):
            for name, make in kinds.items():
                sent, elapsed, used = runner(run(make, port, args.clients, args.seconds, data))
                print(f"round {round_ + 1} {name:20} {sent / elapsed:8.1f} msgs/s  "
                      f"client CPU {used / max(sent, 1) * 1000:6.3f} ms/msg  ({sent} messages)", flush=True)
    finally:
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    main()
