"""Inbound benchmark: relay's inbound listener (POST to a local app) beside its submission listener,
and Postfix's smtp-sink when it is installed, in one run.

Sets up an embedded PostgreSQL (durable), a bench account with a route `*@inbound.bench` to a local
app (Starlette under uvicorn, in its own process, answering 200 at once), the bench SMTP sink as the
submission path's upstream (bench/smtp_bench.py's), and one `relay serve` with both listeners. Then:

  * small messages (2 KB by default), N concurrent clients each reusing one connection (aiosmtplib),
    alternating targets within each round: the inbound listener (no AUTH, a signed JSON POST per
    message), the submission listener (AUTH, the full pipeline, relay to the sink) and smtp-sink;
    msgs/s, p50 and p99;
  * 20 concurrent 9.5 MiB messages with a base64 attachment to the inbound listener (raw client,
    bench/rawclient.py), JSON format: the relay process's peak RSS above its idle RSS beside the bytes
    in flight (issue 12's target: under 1.2 x bytes in flight + 64 MB).

    python bench/inbound_bench.py [--clients 10] [--seconds 10] [--rounds 2] [--size 2048] [--skip-large]
                                  [--install-smtp-sink]

Needs the PostgreSQL server binaries (as `relay dev` does). Sends only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare
import postfix_setup
import rawclient
import smtp_bench

HERE = Path(__file__).resolve()
MIB = 1 << 20
LARGE_SIZE = int(9.5 * MIB)
ROUTED = "*@inbound.bench"
INBOUND, SUBMISSION, SINK = "relay inbound", "relay submission", "smtp-sink"


async def run_app(port: int) -> None:
    """The app: reads the POST and answers 200 at once."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hook(request: Request) -> PlainTextResponse:
        await request.body()
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="none", http="httptools", log_config=None,
                            log_level="warning", access_log=False, lifespan="off", h11_max_incomplete_event_size=None)
    await uvicorn.Server(config).serve()


def child(kind: str, port: int) -> None:
    import logging

    import uvloop
    logging.disable(logging.WARNING)
    uvloop.run(run_app(port) if kind == "app" else smtp_bench.run_sink(port))


async def load_plain(port: int, sender: str, recipient: str, clients: int, seconds: float,
                     data: bytes) -> tuple[int, int, list[float]]:
    """Clients without AUTH, one reused connection each: (accepted, failures, latencies)."""
    import aiosmtplib

    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal failures
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=60)
        await client.connect()
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await client.sendmail(sender, [recipient], data)
                latencies.append(time.perf_counter() - started)
            except (aiosmtplib.SMTPException, OSError):
                failures += 1
                client.close()
                client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=60)
                await client.connect()
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return len(latencies), failures, latencies


async def load_large(port: int, payload: bytes, clients: int, per_client: int) -> tuple[int, int, float]:
    """clients raw connections (no AUTH) each sending per_client messages: (accepted, failed, seconds)."""
    ok = failed = 0
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal ok, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = rawclient.RawSMTP(reader, writer)
        await client.expect(220)
        await client.command(b"EHLO bench.client", 250)
        for _ in range(per_client):
            try:
                await client.send("sender@example.org", "big@inbound.bench", payload)
                ok += 1
            except (OSError, rawclient.SMTPReplyError, TimeoutError) as exc:
                failed += 1
                print(f"  large message failed: {exc}", flush=True)
        await client.quit()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return ok, failed, time.perf_counter() - started


def large_message(size: int) -> bytes:
    """A multipart message of about size bytes, nearly all of it one base64 attachment."""
    raw = os.urandom(size * 3 // 4 - 2048)
    encoded = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    return (b"From: sender@example.org\r\nTo: big@inbound.bench\r\nSubject: large\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
            b"See the attachment.\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + encoded + b"--b1--\r\n")


async def prepare(dsn: str, app_port: int) -> tuple[str, str]:
    """The bench account (smtp_bench's) and its inbound route to the app; (key, sender)."""
    from relay.inbound.routes import Format
    from relay.store.store import Store

    key, sender = await smtp_bench.prepare_database(dsn)
    store = await Store.connect(dsn)
    try:
        account = (await store.list_accounts())[-1]
        await store.create_route(account.id, ROUTED, f"http://127.0.0.1:{app_port}/hook", format=Format.JSON)
    finally:
        await store.close()
    return key, sender


async def inbound_outcomes(dsn: str) -> str:
    import asyncpg
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT outcome, count(*) AS n FROM inbound_log GROUP BY outcome ORDER BY outcome")
        why = await conn.fetch("SELECT DISTINCT response_text FROM inbound_log WHERE outcome <> 'delivered' LIMIT 3")
    finally:
        await conn.close()
    summary = ", ".join(f"{r['outcome']} {r['n']}" for r in rows) or "none"
    return summary + "".join(f"\n  not delivered: {r['response_text']}" for r in why)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--large-clients", type=int, default=20)
    parser.add_argument("--large-per-client", type=int, default=2)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--install-smtp-sink", action="store_true",
                        help="install Postfix (for smtp-sink) with apt-get when missing, as bench/compare.py does")
    parser.add_argument("--child", choices=["app", "sink"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.port)
        return

    import asyncpg

    from relay.embedded import EmbeddedPostgres

    folder = Path(tempfile.mkdtemp(prefix="relay-inbound-bench-"))
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
        app_port, sink_port, smtp_port, inbound_port = (smtp_bench.free_port() for _ in range(4))
        key, sender = asyncio.run(prepare(dsn, app_port))
        for kind, port in (("app", app_port), ("sink", sink_port)):
            procs.append(subprocess.Popen([sys.executable, str(HERE), "--child", kind, "--port", str(port)]))
        env = dict(os.environ, RELAY_DATABASE_URL=dsn, RELAY_SERVER_KEY_SECRET=smtp_bench.KEY_SECRET,
                   RELAY_SMTP_LISTEN=f"127.0.0.1:{smtp_port}", RELAY_SMTP_ALLOW_PLAINTEXT_AUTH="true",
                   RELAY_SMTP_MAX_COMMANDS="10000000", RELAY_SMTP_HOSTNAME="relay.bench",
                   RELAY_HTTP_LISTEN=f"127.0.0.1:{smtp_bench.free_port()}",
                   RELAY_UPSTREAM_URL=f"smtp://127.0.0.1:{sink_port}", RELAY_UPSTREAM_POOL_SIZE=str(args.clients),
                   RELAY_DATABASE_POOL_SIZE=str(args.clients + 2), RELAY_SERVER_DATA_DIR=str(folder),
                   RELAY_INBOUND_LISTEN=f"127.0.0.1:{inbound_port}", RELAY_INBOUND_ALLOW_PRIVATE_TARGETS="true",
                   RELAY_INBOUND_MAX_COMMANDS="10000000",
                   RELAY_INBOUND_MAX_CONNECTIONS_PER_CLIENT=str(max(args.clients, args.large_clients) + 5),
                   RELAY_INBOUND_MAX_CONNECTIONS_PER_APP=str(max(args.clients, args.large_clients)))
        relay_proc = subprocess.Popen([str(Path(sys.executable).parent / "relay"), "serve"], env=env,
                                      stderr=subprocess.DEVNULL)
        procs.append(relay_proc)
        targets: dict[str, tuple[int, int]] = {INBOUND: (inbound_port, relay_proc.pid),
                                               SUBMISSION: (smtp_port, relay_proc.pid)}
        if args.install_smtp_sink:
            print(postfix_setup.ensure_installed(), flush=True)
        if Path(postfix_setup.SMTP_SINK).exists():
            sink_ref_port = smtp_bench.free_port()
            sink_proc = postfix_setup.start_sink(sink_ref_port)
            procs.append(sink_proc)
            targets[SINK] = (sink_ref_port, sink_proc.pid)
        else:
            print(f"smtp-sink not found at {postfix_setup.SMTP_SINK} (package postfix): not measured", flush=True)
        for port in (app_port, sink_port, *(port for port, _ in targets.values())):
            smtp_bench.wait_port(port)

        data = smtp_bench.make_message(sender, args.size)
        results: dict[str, list[tuple[float, float, float, int]]] = {}
        for round_ in range(args.rounds):
            for name, (port, pid) in targets.items():
                cpu_before = smtp_bench.cpu_seconds(pid)
                started = time.perf_counter()
                if name == SUBMISSION:
                    sent, failed, lat = asyncio.run(smtp_bench.load(port, key, sender, args.clients, args.seconds,
                                                                    True, args.size))
                else:
                    sent, failed, lat = asyncio.run(load_plain(port, "sender@example.org", "app@inbound.bench",
                                                               args.clients, args.seconds, data))
                rate = sent / (time.perf_counter() - started)
                cpu_ms = (smtp_bench.cpu_seconds(pid) - cpu_before) / max(sent, 1) * 1000
                lat.sort()
                p50, p99 = smtp_bench.percentile(lat, 50), smtp_bench.percentile(lat, 99)
                results.setdefault(name, []).append((rate, p50, p99, failed, cpu_ms))
                print(f"round {round_ + 1} {name:17} {rate:8.1f} msg/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  "
                      f"server CPU {cpu_ms:5.2f} ms/msg  failures {failed}  ({compare.load_average()})", flush=True)
        print(f"\n{args.clients} clients reusing a connection, {args.size}-byte messages, {args.seconds:g}s per run, "
              f"{args.rounds} rounds alternating; best round shown; {compare.machine()}")
        print("(server CPU: the listening process's own CPU time per message; the app, the sink and PostgreSQL "
              "run in other processes; on a loaded machine it is the steadier comparison)")
        print(f"{'target':17} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/msg':>11} {'vs submission':>14}")
        submission_best = max(r[0] for r in results[SUBMISSION])
        for name in targets:
            rate, p50, p99, _, cpu_ms = max(results[name])
            print(f"{name:17} {rate:8.1f} {p50:8.1f} {p99:8.1f} {cpu_ms:11.2f} {rate / submission_best:13.2f}x")
        inbound_best = max(r[0] for r in results[INBOUND])
        print(f"target: inbound msgs/s >= submission msgs/s: "
              f"{'PASS' if inbound_best >= submission_best else 'FAIL'} ({inbound_best:.1f} vs {submission_best:.1f})")

        if not args.skip_large:
            payload = rawclient.dot_stuffed(large_message(LARGE_SIZE))
            idle_kb = compare._status_kb(relay_proc.pid, "VmRSS:")
            compare.reset_peak([relay_proc.pid])
            with compare.RssSampler(lambda: [relay_proc.pid]) as sampler:
                ok, failed, took = asyncio.run(load_large(inbound_port, payload, args.large_clients,
                                                          args.large_per_client))
            peak_kb = max(sampler.peak_kb, compare._status_kb(relay_proc.pid, "VmHWM:"))
            in_flight = args.large_clients * LARGE_SIZE / MIB
            above = (peak_kb - idle_kb) / 1024
            budget = 1.2 * in_flight + 64
            print(f"\n{args.large_clients} concurrent {LARGE_SIZE / MIB:.1f} MiB messages with an attachment, "
                  f"{args.large_per_client} each, JSON format: {ok} delivered, {failed} failed, "
                  f"{ok * LARGE_SIZE / MIB / took:.1f} MiB/s")
            print(f"relay RSS idle {idle_kb / 1024:.0f} MB, peak {peak_kb / 1024:.0f} MB: {above:.0f} MB above idle "
                  f"for {in_flight:.0f} MiB in flight; target 1.2 x in flight + 64 = {budget:.0f} MB: "
                  f"{'PASS' if above <= budget else 'FAIL'}")
        print(f"inbound log outcomes: {asyncio.run(inbound_outcomes(dsn))}")
    finally:
        smtp_bench.stop_processes(procs)
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
