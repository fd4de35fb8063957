"""SMTP benchmark: `relay serve` (full pipeline, PostgreSQL, relay to a sink) beside a bare aiosmtpd server.

Both targets get the same load in the same run, alternating: authenticated senders, 2 KB
messages, N concurrent clients, once with a new connection per message and once reusing a
connection. The clients run in this process (bench/rawclient.py's lean client by default; each
run line gives its CPU per message); bench/compare.py runs them in processes of their own and
gives every process's CPU per message. Prints messages/s, p50/p99 latency and the server's peak
RSS, and relay's ratio to the bare server.

    python bench/smtp_bench.py [--clients 10] [--seconds 10] [--rounds 2] [--size 2048]

Needs the PostgreSQL server binaries (as `relay dev` does). Sends only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
KEY_SECRET = "bench-key-secret"


# -- servers run as child processes of this script -------------------------------------------



def stop_processes(procs: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    """SIGTERM every process, then wait for each up to grace seconds and kill what is left."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_sink(port: int) -> None:
    """The upstream: a minimal SMTP sink that accepts everything and stores nothing."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    await reader.readuntil(b"\r\n.\r\n")
                    writer.write(b"250 2.0.0 Ok: queued\r\n")
                elif verb == b"EHLO":
                    writer.write(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"250 OK\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", port, limit=32 << 20)
    async with server:
        await server.serve_forever()


async def run_bare(port: int) -> None:
    """The reference: a bare aiosmtpd 1.4.6 server that accepts any AUTH and answers 250."""
    from aiosmtpd.smtp import SMTP, AuthResult

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    def authenticator(*_: object) -> AuthResult:
        return AuthResult(success=True)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Handler(), hostname="bare", authenticator=authenticator, auth_required=True,
                     auth_require_tls=False, loop=loop),
        "127.0.0.1", port,
    )
    async with server:
        await server.serve_forever()


def child(kind: str, port: int) -> None:
    import logging
    import warnings

    import uvloop

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    uvloop.run(run_sink(port) if kind == "sink" else run_bare(port))


# -- the load generator -------------------------------------------------------------------------


def make_message(sender: str, size: int) -> bytes:
    head = f"From: {sender}\r\nTo: rcpt@dest.test\r\nSubject: bench\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


async def load(port: int, key: str, sender: str, clients: int, seconds: float, reuse: bool,
               size: int) -> tuple[int, int, list[float]]:
    """Run the clients for `seconds`; (messages accepted, failures, latencies in seconds)."""
    import aiosmtplib

    data = make_message(sender, size)
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def connect() -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
        await client.connect()
        await client.login("bench", key)
        return client

    async def worker() -> None:
        nonlocal failures
        client = await connect() if reuse else None
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                if not reuse:
                    client = await connect()
                assert client is not None
                await client.sendmail(sender, ["rcpt@dest.test"], data)
                if not reuse:
                    await client.quit()
                latencies.append(time.perf_counter() - started)
            except (aiosmtplib.SMTPException, OSError):
                failures += 1
                if client is not None:
                    client.close()
                client = await connect() if reuse else None
        if reuse and client is not None:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return len(latencies), failures, latencies


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (this one when pid is None)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def tree_cpu_seconds(root: int) -> float:
    """CPU time of a process, its live descendants and the children it has reaped (PostgreSQL's backends)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            parents[int(entry.name)] = int(fields[1])
            ticks[int(entry.name)] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in ticks:
            continue
        seen.add(pid)
        total += ticks[pid]
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- setting up relay ------------------------------------------------------------------------------


async def prepare_database(dsn: str) -> tuple[str, str]:
    """Migrate, and create a bench account whose limits do not interfere; (key, sender)."""
    import asyncpg

    from relay import keys
    from relay.store import migrate
    from relay.store.store import Store

    conn = await asyncpg.connect(dsn)
    await migrate.migrate(conn)
    await conn.close()
    store = await Store.connect(dsn)
    account = await store.create_account(f"bench-{os.getpid()}", 10**12)
    sender = "bench@example.com"
    await store.add_sender(account.id, sender, 2_000_000_000)
    key_id, secret = keys.new_key_id(), keys.new_secret()
    await store.create_key(key_id, account.id, keys.digest(KEY_SECRET.encode(), secret), "bench", 10**9)
    await store.close()
    return keys.format_key(key_id, secret), sender


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100) of latencies in seconds, in ms; nan when empty. The
    one formula every bench script uses, p50 included."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1] * 1000


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--client", choices=["raw", "aiosmtplib"], default="raw",
                        help="load generator: bench/rawclient.py's lean client (default) or aiosmtplib, "
                             "which costs 0.4-0.9 ms of CPU per message, as much as a bare server")
    parser.add_argument("--child", choices=["sink", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.port)
        return

    import asyncpg

    from relay.embedded import EmbeddedPostgres

    folder = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    folder.chmod(0o711)
    pg = EmbeddedPostgres(folder / "pg")  # durable: a real commit per message
    pg.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        dsn_admin = pg.dsn("postgres")

        async def create_db() -> None:
            conn = await asyncpg.connect(dsn_admin)
            await conn.execute("CREATE DATABASE relay")
            await conn.close()

        asyncio.run(create_db())
        dsn = pg.dsn("relay")
        key, sender = asyncio.run(prepare_database(dsn))
        sink_port, bare_port, relay_port = free_port(), free_port(), free_port()
        for kind, port in (("sink", sink_port), ("bare", bare_port)):
            procs.append(subprocess.Popen([sys.executable, str(HERE), "--child", kind, "--port", str(port)]))
        env = dict(os.environ, RELAY_DATABASE_URL=dsn, RELAY_SERVER_KEY_SECRET=KEY_SECRET,
                   RELAY_SMTP_LISTEN=f"127.0.0.1:{relay_port}", RELAY_SMTP_ALLOW_PLAINTEXT_AUTH="true",
                   # like the bench key's rate limit: must not interfere (1000 MAIL per connection)
                   RELAY_SMTP_MAX_COMMANDS="10000000",
                   RELAY_SMTP_HOSTNAME="relay.bench", RELAY_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
                   RELAY_UPSTREAM_URL=f"smtp://127.0.0.1:{sink_port}",
                   RELAY_UPSTREAM_POOL_SIZE=str(args.clients), RELAY_DATABASE_POOL_SIZE=str(args.clients + 2),
                   RELAY_SERVER_DATA_DIR=str(folder))
        relay_proc = subprocess.Popen([str(Path(sys.executable).parent / "relay"), "serve"], env=env,
                                      stderr=subprocess.DEVNULL)
        procs.append(relay_proc)
        for port in (sink_port, bare_port, relay_port):
            wait_port(port)
        targets = {"bare aiosmtpd": (bare_port, procs[1].pid), "relay serve": (relay_port, relay_proc.pid)}
        results: dict[tuple[str, str], list[tuple[float, float, float, int]]] = {}
        for round_ in range(args.rounds):
            for mode in ("new connection", "reuse"):
                for name, (port, pid) in targets.items():
                    started, cpu, server_cpu = time.perf_counter(), cpu_seconds(), cpu_seconds(pid)
                    if args.client == "raw":
                        import rawclient
                        import uvloop

                        payload = rawclient.dot_stuffed(make_message(sender, args.size))
                        sent, failed, lat, _ = uvloop.run(rawclient.small_load(
                            port, "bench", key, sender, payload, args.clients, args.seconds, mode == "reuse"))
                    else:
                        sent, failed, lat = asyncio.run(load(port, key, sender, args.clients, args.seconds,
                                                             mode == "reuse", args.size))
                    rate = sent / (time.perf_counter() - started)  # measured: the last sends end late
                    generator_ms = (cpu_seconds() - cpu) / sent * 1000 if sent else float("nan")
                    # the server process's own CPU per message (not PostgreSQL's): on a loaded machine
                    # this is steadier than msg/s
                    server_ms = (cpu_seconds(pid) - server_cpu) / sent * 1000 if sent else float("nan")
                    lat.sort()
                    p50, p99 = percentile(lat, 50), percentile(lat, 99)
                    results.setdefault((name, mode), []).append((rate, p50, p99, failed))
                    print(f"round {round_ + 1} {mode:15} {name:14} {rate:8.1f} msg/s  p50 {p50:6.1f} ms  "
                          f"p99 {p99:6.1f} ms  failures {failed}  server CPU {server_ms:.3f} ms/msg  "
                          f"generator CPU {generator_ms:.2f} ms/msg", flush=True)
        print(f"\n{args.clients} clients, {args.size}-byte messages, {args.seconds:g}s per run, "
              f"{args.rounds} rounds alternating; best round shown; {os.cpu_count()} CPUs")
        print(f"{'mode':15} {'target':14} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'peak RSS':>9} {'vs bare':>8}")
        for mode in ("new connection", "reuse"):
            bare_best = max(r[0] for r in results[("bare aiosmtpd", mode)])
            for name, (_port, pid) in targets.items():
                rate, p50, p99, _ = max(results[(name, mode)])
                print(f"{mode:15} {name:14} {rate:8.1f} {p50:8.1f} {p99:8.1f} {peak_rss_mb(pid):7.0f}MB "
                      f"{rate / bare_best:7.2f}x")
        async def count() -> int:
            conn = await asyncpg.connect(dsn)
            try:
                return int(await conn.fetchval("SELECT count(*) FROM messages WHERE status = 'sent'"))
            finally:
                await conn.close()
        print(f"relay log rows 'sent': {asyncio.run(count())}")
    finally:
        stop_processes(procs)
        pg.stop()
        import shutil
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
