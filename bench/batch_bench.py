"""Batch sends: one POST /v1/send/batch of 100 messages beside the same 100 messages as single
POST /v1/send calls (one after another, and 10 at a time), against `relay serve` with PostgreSQL and
a sink upstream, all on this machine.

Each round runs the three targets once, alternating; the best and median rounds are shown, with the
relay's CPU per message. (PostgreSQL's commit counters are left out: backends report them only when
idle for 10 seconds, so per-round figures would need long pauses.)

    python bench/batch_bench.py [--rounds 5] [--size 2048]

Needs the PostgreSQL server binaries (as `relay dev` does). Sends only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

from http_bench import make_body, tail, wait_listening  # noqa: E402
from smtp_bench import KEY_SECRET, cpu_seconds, free_port, prepare_database  # noqa: E402

BATCH = 100
TARGETS = ("batch of 100", "100 single, serial", "100 single, 10 at once")


async def run_round(port: int, key: str, bodies: list[dict[str, object]], target: str) -> int:
    """Send the 100 messages as target says; the number accepted."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        if target == TARGETS[0]:
            response = await client.post("/v1/send/batch", json=bodies, headers=headers)
            return sum(r["statusCode"] == 200 for r in response.json()["results"])
        if target == TARGETS[1]:
            ok = 0
            for body in bodies:
                ok += (await client.post("/v1/send", json=body, headers=headers)).status_code == 200
            return ok
        gate = asyncio.Semaphore(10)

        async def one(body: dict[str, object]) -> bool:
            async with gate:
                return (await client.post("/v1/send", json=body, headers=headers)).status_code == 200

        return sum(await asyncio.gather(*(one(b) for b in bodies)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each running every target once (default 5)")
    parser.add_argument("--size", type=int, default=2048, help="bytes of message text (default 2048)")
    args = parser.parse_args()

    import asyncpg

    from relay.embedded import EmbeddedPostgres

    folder = Path(tempfile.mkdtemp(prefix="relay-batch-bench-"))
    folder.chmod(0o711)
    relay_log = folder / "relay.log"
    pg = EmbeddedPostgres(folder / "pg")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pg.start()

        async def create_db() -> None:
            conn = await asyncpg.connect(pg.dsn("postgres"))
            await conn.execute("CREATE DATABASE relay")
            await conn.close()

        asyncio.run(create_db())
        dsn = pg.dsn("relay")
        key, sender = asyncio.run(prepare_database(dsn))
        sink_port, http_port, smtp_port = free_port(), free_port(), free_port()
        sink = subprocess.Popen([sys.executable, str(HERE.parent / "http_bench.py"), "--child", "sink",
                                 "--port", str(sink_port)])
        procs.append(sink)
        env = dict(os.environ, RELAY_DATABASE_URL=dsn, RELAY_SERVER_KEY_SECRET=KEY_SECRET,
                   RELAY_HTTP_LISTEN=f"127.0.0.1:{http_port}", RELAY_SMTP_LISTEN=f"127.0.0.1:{smtp_port}",
                   RELAY_SMTP_HOSTNAME="relay.bench", RELAY_UPSTREAM_URL=f"smtp://127.0.0.1:{sink_port}",
                   RELAY_UPSTREAM_POOL_SIZE="10", RELAY_DATABASE_POOL_SIZE="12", RELAY_SERVER_DATA_DIR=str(folder))
        with relay_log.open("wb") as log_file:
            relay_proc = subprocess.Popen([str(Path(sys.executable).parent / "relay"), "serve"], env=env,
                                          stdout=log_file, stderr=subprocess.STDOUT)
        procs.append(relay_proc)
        try:
            for port, proc in ((sink_port, sink), (http_port, relay_proc)):
                wait_listening(port, proc)
        except RuntimeError:
            print(f"relay serve's output:\n{tail(relay_log)}", file=sys.stderr)
            raise
        template = json.loads(make_body(sender, args.size))
        bodies = [template | {"to": [f"r{i}@dest.test"]} for i in range(BATCH)]
        asyncio.run(run_round(http_port, key, bodies[:10], TARGETS[2]))  # warm-up
        results: dict[str, list[tuple[float, float]]] = {t: [] for t in TARGETS}
        for round_ in range(args.rounds):
            for target in TARGETS:
                cpu = cpu_seconds(relay_proc.pid)
                started = time.perf_counter()
                ok = asyncio.run(run_round(http_port, key, bodies, target))
                elapsed = time.perf_counter() - started
                cpu = cpu_seconds(relay_proc.pid) - cpu
                assert ok == BATCH, f"{target}: only {ok} of {BATCH} accepted"
                results[target].append((BATCH / elapsed, cpu / BATCH * 1000))
                print(f"round {round_ + 1} {target:24} {BATCH / elapsed:8.1f} msgs/s  relay CPU "
                      f"{cpu / BATCH * 1000:5.2f} ms/msg", flush=True)
        print(f"\n{BATCH} messages of {len(make_body(sender, args.size))} JSON bytes, {args.rounds} rounds "
              f"alternating, {os.cpu_count()} CPUs")
        print(f"{'target':24} {'best msgs/s':>12} {'median':>8} {'CPU ms/msg':>11} {'vs serial':>10}")
        serial = max(r[0] for r in results[TARGETS[1]])
        for target in TARGETS:
            rates = [r[0] for r in results[target]]
            best = max(results[target])
            print(f"{target:24} {best[0]:12.1f} {statistics.median(rates):8.1f} {best[1]:11.2f} "
                  f"{best[0] / serial:9.1f}x")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        pg.stop()


if __name__ == "__main__":
    main()
