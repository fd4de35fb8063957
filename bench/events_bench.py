"""Events bench (issue 13): the SMTP send path's msgs/s with events and one webhook endpoint, beside
the same path without a webhook endpoint and beside the code before events (a git ref), in one run.

Three targets, alternating within each round, each its own `relay serve` on its own database in
one embedded PostgreSQL, all relaying to one SMTP sink (bench/smtp_bench.py's load generator,
sink and account setup):

  * "before events": relay at --baseline-ref (default: 5fc767c, before events), checked out into a temporary
    worktree: no recipients rows, no events;
  * "events": this tree, an account without webhook endpoints (events written, nothing to deliver);
  * "events + webhook": this tree, an account with one endpoint, a local receiver (uvicorn) answering
    200; after each run the script waits for the outbox to drain and reports deliveries/s.

    python bench/events_bench.py [--clients 10] [--seconds 10] [--rounds 2] [--baseline-ref 5fc767c]

Needs git and the PostgreSQL server binaries. Sends only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import smtp_bench

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent


def run_receiver(port: int) -> None:
    """A webhook receiver: 200 to every POST."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def hook(request: Request) -> Response:
        await request.body()
        return Response(b"ok")

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def prepare(dsn: str, webhook_url: str | None) -> tuple[str, str]:
    """smtp_bench's account (migrated by the relay on sys.path), plus a webhook endpoint when asked."""
    key, sender = await smtp_bench.prepare_database(dsn)
    if webhook_url:
        import asyncpg

        from relay.outbound.signing import generate_secret

        conn = await asyncpg.connect(dsn)
        try:
            account = await conn.fetchval("SELECT max(id) FROM accounts")
            await conn.execute("INSERT INTO webhook_endpoints (id, account_id, url, secret) "
                               "VALUES ('we_bench', $1, $2, $3)", account, webhook_url, generate_secret())
        finally:
            await conn.close()
    return key, sender


async def outbox(dsn: str) -> tuple[int, int]:
    """(pending, delivered) webhook deliveries."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT count(*) FILTER (WHERE status = 'pending') AS p, "
                                  "count(*) FILTER (WHERE status = 'delivered') AS d FROM webhook_deliveries")
        assert row is not None
        return int(row["p"]), int(row["d"])
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--baseline-ref", default="5fc767c")  # the last commit before events
    parser.add_argument("--child", choices=["sink", "receiver", "prepare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--webhook", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "sink":
        asyncio.run(smtp_bench.run_sink(args.port))
        return
    if args.child == "receiver":
        run_receiver(args.port)
        return
    if args.child == "prepare":
        print(" ".join(asyncio.run(prepare(args.dsn, args.webhook))))
        return

    import asyncpg

    from relay.embedded import EmbeddedPostgres

    folder = Path(tempfile.mkdtemp(prefix="relay-events-bench-"))
    folder.chmod(0o711)
    baseline = folder / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline), args.baseline_ref],
                   check=True, capture_output=True)
    pg = EmbeddedPostgres(str(folder / "pg"))  # durable: a real commit per message
    pg.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async def create(names: list[str]) -> None:
            conn = await asyncpg.connect(pg.dsn("postgres"))
            for name in names:
                await conn.execute(f"CREATE DATABASE {name}")
            await conn.close()

        asyncio.run(create(["before", "events", "hooks"]))
        sink_port, receiver_port = smtp_bench.free_port(), smtp_bench.free_port()
        for kind, port in (("sink", sink_port), ("receiver", receiver_port)):
            procs.append(subprocess.Popen([sys.executable, str(HERE), "--child", kind, "--port", str(port)]))
        smtp_bench.wait_port(receiver_port)
        targets: dict[str, tuple[int, str, str, str, int]] = {}
        receiver_pid = procs[1].pid
        for name, db, tree, hook in (("before events", "before", baseline, None),
                                     ("events", "events", ROOT, None),
                                     ("events + webhook", "hooks", ROOT, f"http://127.0.0.1:{receiver_port}/hook")):
            env = dict(os.environ, PYTHONPATH=f"{tree}:{HERE.parent}")
            cmd = [sys.executable, str(HERE), "--child", "prepare", "--dsn", pg.dsn(db)]
            out = subprocess.run(cmd + (["--webhook", hook] if hook else []), env=env, check=True,
                                 capture_output=True, text=True).stdout.split()
            port = smtp_bench.free_port()
            env.update(RELAY_DATABASE_URL=pg.dsn(db), RELAY_SERVER_KEY_SECRET=smtp_bench.KEY_SECRET,
                       RELAY_SMTP_LISTEN=f"127.0.0.1:{port}", RELAY_SMTP_ALLOW_PLAINTEXT_AUTH="true",
                       RELAY_SMTP_MAX_COMMANDS="10000000", RELAY_SMTP_HOSTNAME="relay.bench",
                       RELAY_HTTP_LISTEN=f"127.0.0.1:{smtp_bench.free_port()}",
                       RELAY_UPSTREAM_URL=f"smtp://127.0.0.1:{sink_port}",
                       RELAY_UPSTREAM_POOL_SIZE=str(args.clients), RELAY_DATABASE_POOL_SIZE=str(args.clients + 2),
                       RELAY_SERVER_DATA_DIR=str(folder / db))
            if tree is ROOT:
                env["RELAY_WEBHOOKS_ALLOW_PRIVATE_TARGETS"] = "true"
            log = folder / f"{db}.log"
            with log.open("wb") as err:
                procs.append(subprocess.Popen([sys.executable, "-c", "from relay.cli import main; main()", "serve"],
                                              env=env, stderr=err, cwd=tree))
            try:
                smtp_bench.wait_port(port)
            except RuntimeError:
                print(f"{name}: {log.read_text()[-3000:]}", file=sys.stderr)
                raise
            targets[name] = (port, out[0], out[1], db, procs[-1].pid)
        results: dict[str, list[float]] = {name: [] for name in targets}
        drains: list[float] = []
        for round_ in range(args.rounds):
            for name, (port, key, sender, db, pid) in targets.items():
                cpu_relay, cpu_receiver = smtp_bench.cpu_seconds(pid), smtp_bench.cpu_seconds(receiver_pid)
                started = time.perf_counter()
                sent, failed, lat = asyncio.run(smtp_bench.load(port, key, sender, args.clients, args.seconds,
                                                                True, args.size))
                rate = sent / (time.perf_counter() - started)
                lat.sort()
                line = (f"round {round_ + 1} {name:17} {rate:8.1f} msg/s  p50 {smtp_bench.percentile(lat, 50):6.1f} ms"
                        f"  p99 {smtp_bench.percentile(lat, 99):6.1f} ms  failures {failed}")
                if db == "hooks":
                    left, delivered = asyncio.run(outbox(pg.dsn(db)))
                    waited = time.perf_counter()
                    while left:
                        time.sleep(0.1)
                        left, delivered = asyncio.run(outbox(pg.dsn(db)))
                    after = time.perf_counter() - waited
                    drains.append(after)
                    line += f"  webhooks: {delivered} delivered in all, outbox empty {after:.1f} s after the run"
                    receiver_ms = (smtp_bench.cpu_seconds(receiver_pid) - cpu_receiver) * 1000 / max(sent, 1)
                    line += f", receiver CPU {receiver_ms:.2f} ms/msg"
                line += f"  relay CPU {(smtp_bench.cpu_seconds(pid) - cpu_relay) * 1000 / max(sent, 1):.2f} ms/msg"
                results[name].append(rate)
                print(line, flush=True)
        print(f"\n{args.clients} clients (reused connections), {args.size}-byte messages, {args.seconds:g}s per run, "
              f"{args.rounds} rounds alternating; best round shown; {os.cpu_count()} CPUs")
        best_before = max(results["before events"])
        for name, rates in results.items():
            print(f"{name:17} {max(rates):8.1f} msg/s  {max(rates) / best_before:6.2f}x of before events")
        print(f"webhook outbox drained within {max(drains):.1f} s of the end of each run (0: kept up)")
    finally:
        smtp_bench.stop_processes(procs)
        pg.stop()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], capture_output=True)
        import shutil
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
