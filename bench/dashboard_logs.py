"""The Logs tab's queries on a million-row log: EXPLAIN ANALYZE of each filter shape, with and without
the dashboard's indexes, in the same run (the reference: only the indexes that existed before).

    .venv/bin/python bench/dashboard_logs.py [--rows 1000000]

Rows are made with generate_series: 10 accounts, account 1 holding 60 %, 90 days, 94 % sent,
3 % failed, 2 % queued, 1 % sending; 60 % api, 40 % smtp; 20 senders per account.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from relay.embedded import EmbeddedPostgres
from relay.store import migrate
from relay.store.dashboard import DAILY_COUNTS, Cursor, LogFilter, log_query

GENERATE = """
INSERT INTO messages (id, channel, status, key_id, account_id, sender, recipient_count, size_bytes,
                      credits_charged, credits_refunded, created_at, updated_at)
SELECT gen_random_uuid(),
       CASE WHEN c < 0.6 THEN 'api' ELSE 'smtp' END,
       CASE WHEN s < 0.94 THEN 'sent' WHEN s < 0.97 THEN 'failed' WHEN s < 0.99 THEN 'queued' ELSE 'sending' END,
       'k', CASE WHEN a < 0.6 THEN $2 WHEN a < 0.605 THEN $2 + 1 ELSE $2 + 2 + (a * 1000)::int % 8 END,
       'app' || floor(f * 20)::int || '@example.com', 1, 1000, 1, 0,
       now() - make_interval(secs => d * 90 * 86400), now()
  FROM (SELECT random() AS a, random() AS s, random() AS c, random() AS f, random() AS d
          FROM generate_series(1, $1)) AS r
"""

DASHBOARD_INDEXES = ("messages_account_created_id", "messages_account_status_created",
                     "messages_account_channel_created", "messages_account_sender_created")


async def timed(conn: asyncpg.Connection, sql: str, args: list[object], runs: int = 15) -> float:
    """Median milliseconds of a query (after one unmeasured run, so neither side pays for a cold cache)."""
    await conn.fetch(sql, *args)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        await conn.fetch(sql, *args)
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


async def plan(conn: asyncpg.Connection, sql: str, args: list[object]) -> tuple[str, float]:
    """EXPLAIN (ANALYZE, BUFFERS) as text, and its execution time in ms (server side: no round trip,
    so it does not move with the load of a shared machine as the wall-clock median does)."""
    rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", *args)
    text = "\n".join(r[0] for r in rows)
    execution = float(text.rsplit("Execution Time: ", 1)[1].split()[0])
    return text, execution


async def run(dsn: str, rows: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn)
        for i in range(10):
            await conn.execute("INSERT INTO accounts (name, credits) VALUES ($1, 0)", f"bench{i}")
        first = await conn.fetchval("SELECT min(id) FROM accounts")
        t = time.perf_counter()
        await conn.execute(GENERATE, rows, first)
        await conn.execute("VACUUM ANALYZE messages")
        print(f"generated {rows} rows in {time.perf_counter() - t:.1f} s "
              f"(account {first}: {await conn.fetchval('SELECT count(*) FROM messages WHERE account_id = $1', first)})")
        today = datetime.now(UTC).date()
        for account, label in ((first, "the big account (60 % of the log)"),
                               (first + 1, "a small account (0.5 % of the log)")):
            await compare(conn, account, label, today)
    finally:
        await conn.close()


async def compare(conn: asyncpg.Connection, first: int, label: str, today: date) -> None:
    """Each filter shape on one account, with and without the dashboard's indexes."""
    count = await conn.fetchval("SELECT count(*) FROM messages WHERE account_id = $1", first)
    print(f"\n== {label}: account {first}, {count} rows")
    mid = await conn.fetchrow("SELECT created_at, id FROM messages WHERE account_id = $1 "
                              "ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1", first, min(20000, count // 2))
    shapes: list[tuple[str, LogFilter, Cursor | None]] = [
        ("newest page, no filter", LogFilter(), None),
        ("deep page (keyset cursor)", LogFilter(), Cursor(mid["created_at"], mid["id"])),
        ("status = failed", LogFilter(status="failed"), None),
        ("status = sending (rare)", LogFilter(status="sending"), None),
        ("channel = smtp", LogFilter(channel="smtp"), None),
        ("sender = app7@example.com", LogFilter(sender="app7@example.com"), None),
        ("one day, 40 days ago", LogFilter(since=today - timedelta(days=40), until=today - timedelta(days=40)),
         None),
        ("failed + 7 days", LogFilter(status="failed", since=today - timedelta(days=7)), None),
    ]
    print(f"\n{'':34} {'execution (EXPLAIN ANALYZE)':>30}   {'wall-clock median':>30}")
    print(f"{'query':34} {'indexes':>14} {'reference':>15}   {'indexes':>14} {'reference':>15}")
    plans: list[tuple[str, str]] = []
    for name, where, after in shapes:
        sql, args = log_query(first, where, after, 51)
        with_idx = await timed(conn, sql, args)
        text, executed = await plan(conn, sql, args)
        plans.append((name, text))
        tx = conn.transaction()
        await tx.start()
        for index in DASHBOARD_INDEXES:
            await conn.execute(f"DROP INDEX {index}")
        await conn.execute("CREATE INDEX messages_account_created ON messages (account_id, created_at DESC)")
        without = await timed(conn, sql, args, runs=3)
        _, executed_without = await plan(conn, sql, args)
        await tx.rollback()
        print(f"{name:34} {executed:11.3f} ms {executed_without:12.3f} ms   {with_idx:11.2f} ms {without:12.2f} ms")
    # the Overview's chart: 30 days of one account counted by day and status
    chart_sql = DAILY_COUNTS
    chart_args: list[object] = [first, today - timedelta(days=29)]
    chart_ms = await timed(conn, chart_sql, chart_args, runs=5)
    chart_plan, chart_exec = await plan(conn, chart_sql, chart_args)
    print(f"{'overview chart (30 days)':34} {chart_exec:11.3f} ms {'':>15}   {chart_ms:11.2f} ms")
    plans.append(("overview chart (30 days)", chart_plan))
    for name, text in plans:
        print(f"\n-- {name} (account {first})\n{text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="relay-dash-bench-"))
    folder.chmod(0o711)
    pg = EmbeddedPostgres(str(folder / "pg"), durable=False)
    try:
        pg.start()

        async def create() -> None:
            admin = await asyncpg.connect(pg.dsn("postgres"))
            await admin.execute("CREATE DATABASE bench")
            await admin.close()
        asyncio.run(create())
        asyncio.run(run(pg.dsn("bench"), args.rows))
    finally:
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
