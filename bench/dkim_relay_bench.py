"""DKIM signing on beside off, through `relay serve`, in one run: msgs/s and relay CPU per message.

One database, one sink, two `relay serve` processes that differ only in `[dkim] thread_from_bytes`
(0: every message signed in the signing threads; 10 MB: inline on the event loop); two senders of
one account, one in a trusted sending domain (every message DKIM-signed, RSA-2048) and one in a
domain without a key (nothing signed). Runs alternate: signed through the threaded relay, signed
through the inline one, unsigned; for 2 KB messages (connection reuse) and 9.5 MiB messages.

    python bench/dkim_relay_bench.py [--clients 10] [--seconds 10] [--rounds 2] [--large-clients 4]

Needs the PostgreSQL server binaries (as `relay dev` does). Sends only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import smtp_bench  # bench/ is on sys.path when this script runs
from smtp_bench import KEY_SECRET, cpu_seconds, free_port, load, percentile, wait_port

LARGE = int(9.5 * 1024 * 1024)


async def prepare(dsn: str) -> tuple[str, str, str]:
    """Migrate; an account with a signed and an unsigned sender; (key, signed sender, unsigned sender)."""
    import asyncpg

    from relay import keys
    from relay.config import load_config
    from relay.dkim import service
    from relay.store import migrate
    from relay.store.store import Store

    conn = await asyncpg.connect(dsn)
    await migrate.migrate(conn)
    await conn.close()
    store = await Store.connect(dsn)
    account = await store.create_account(f"bench-{os.getpid()}", 10**12)
    signed, unsigned = "bench@signed.example.com", "bench@plain.example.net"
    for sender in (signed, unsigned):
        await store.add_sender(account.id, sender, 2_000_000_000)
    await service.add(store, load_config(None, env={}), KEY_SECRET.encode(), account.id, "signed.example.com",
                      selector="bench", trust=True)
    key_id, secret = keys.new_key_id(), keys.new_secret()
    await store.create_key(key_id, account.id, keys.digest(KEY_SECRET.encode(), secret), "bench", 10**9)
    await store.close()
    return keys.format_key(key_id, secret), signed, unsigned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--large-clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import asyncpg

    from relay.embedded import EmbeddedPostgres

    folder = Path(tempfile.mkdtemp(prefix="relay-dkim-bench-"))
    folder.chmod(0o711)
    pg = EmbeddedPostgres(folder / "pg")
    pg.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async def create_db() -> None:
            conn = await asyncpg.connect(pg.dsn("postgres"))
            await conn.execute("CREATE DATABASE relay")
            await conn.close()

        asyncio.run(create_db())
        dsn = pg.dsn("relay")
        key, signed, unsigned = asyncio.run(prepare(dsn))
        sink_port = free_port()
        procs.append(subprocess.Popen([sys.executable, str(smtp_bench.HERE), "--child", "sink",
                                       "--port", str(sink_port)]))
        relays: dict[str, tuple[int, int]] = {}  # name -> (port, pid)
        for name, thread_from in (("threads", 0), ("inline", 10**9)):
            port = free_port()
            env = dict(os.environ, RELAY_DATABASE_URL=dsn, RELAY_SERVER_KEY_SECRET=KEY_SECRET,
                       RELAY_SMTP_LISTEN=f"127.0.0.1:{port}", RELAY_SMTP_ALLOW_PLAINTEXT_AUTH="true",
                       RELAY_SMTP_MAX_COMMANDS="10000000", RELAY_SMTP_HOSTNAME="relay.bench",
                       RELAY_HTTP_LISTEN=f"127.0.0.1:{free_port()}", RELAY_UPSTREAM_URL=f"smtp://127.0.0.1:{sink_port}",
                       RELAY_UPSTREAM_POOL_SIZE=str(args.clients), RELAY_DATABASE_POOL_SIZE=str(args.clients + 2),
                       RELAY_SERVER_DATA_DIR=str(folder), RELAY_DKIM_RECHECK_HOURS="0",
                       RELAY_DKIM_THREAD_FROM_BYTES=str(thread_from), RELAY_QUEUE_WORKER="false")
            proc = subprocess.Popen([str(Path(sys.executable).parent / "relay"), "serve"], env=env,
                                    stderr=subprocess.DEVNULL)
            procs.append(proc)
            relays[name] = (port, proc.pid)
            wait_port(port)
        wait_port(sink_port)
        modes = (("signed, threads", "threads", signed), ("signed, inline", "inline", signed),
                 ("unsigned", "threads", unsigned))

        runs = [("2 KB", 2048, args.clients, args.seconds), ("9.5 MiB", LARGE, args.large_clients, args.seconds)]
        results: dict[tuple[str, str], list[tuple[float, float, float, float, int]]] = {}
        for round_ in range(args.rounds):
            for label, size, clients, seconds in runs:
                for mode, relay_name, sender in modes:
                    relay_port, relay_pid = relays[relay_name]
                    cpu_before = cpu_seconds(relay_pid)
                    started = time.perf_counter()
                    sent, failed, lat = asyncio.run(load(relay_port, key, sender, clients, seconds, True, size))
                    rate = sent / (time.perf_counter() - started)
                    cpu_ms = (cpu_seconds(relay_pid) - cpu_before) * 1000 / max(sent, 1)
                    lat.sort()
                    p50, p99 = percentile(lat, 50), percentile(lat, 99)
                    results.setdefault((label, mode), []).append((rate, p50, p99, cpu_ms, failed))
                    print(f"round {round_ + 1} {label:8} {mode:16} {rate:8.1f} msg/s  p50 {p50:7.1f} ms  "
                          f"p99 {p99:7.1f} ms  relay CPU {cpu_ms:6.2f} ms/msg  failures {failed}", flush=True)

        print(f"\nbest round of {args.rounds}, alternating; {args.seconds:g}s per run; connection reuse; "
              f"{os.cpu_count()} CPUs; RSA-2048 relaxed/relaxed")
        print(f"{'message':8} {'mode':16} {'clients':>7} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'CPU ms/msg':>10} {'vs unsigned':>11}")
        for label, _size, clients, _seconds in runs:
            off = max(results[(label, "unsigned")])[0]
            for mode, _relay, _sender in modes:
                rate, p50, p99, cpu_ms, _failed = max(results[(label, mode)])
                print(f"{label:8} {mode:16} {clients:7} {rate:8.1f} {p50:8.1f} {p99:8.1f} {cpu_ms:10.2f} "
                      f"{rate / off:10.2f}x")
    finally:
        smtp_bench.stop_processes(procs)
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
