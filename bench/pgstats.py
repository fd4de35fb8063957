"""PostgreSQL's work per relayed message: rows written per table (HOT updates apart), index
count, time inside relay's SQL functions, WAL bytes and WAL syncs, from PostgreSQL's own
statistics (bench/compare.py).

The counters are cumulative; take `snapshot` before and after, with relay stopped before the
second one (a backend reports its counters when it goes idle or exits, not at every commit).
"""

from __future__ import annotations

from typing import Any

TABLES = """SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del,
                   (SELECT count(*) FROM pg_index i WHERE i.indrelid = s.relid) AS indexes
              FROM pg_stat_user_tables s"""
WAL = "SELECT wal_records, wal_bytes, wal_sync FROM pg_stat_wal"
# filled only with track_functions = 'pl' (compare.py sets it on relay's database)
FUNCTIONS = "SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions"


async def snapshot(dsn: str) -> dict[str, Any]:
    """The cumulative counters now."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        tables = {r["relname"]: dict(r) for r in await conn.fetch(TABLES)}
        wal = dict(await conn.fetchrow(WAL) or {})
        functions = {r["funcname"]: dict(r) for r in await conn.fetch(FUNCTIONS)}
    finally:
        await conn.close()
    return {"tables": tables, "wal": wal, "functions": functions}


def report(before: dict[str, Any], after: dict[str, Any], messages: int) -> list[str]:
    """Lines: per table with writes, rows inserted / updated (HOT) / deleted per message and its
    index count; then WAL records, bytes and syncs per message."""
    if not messages:
        return ["no relay messages"]
    lines = []
    for name, row in sorted(after["tables"].items()):
        old = before["tables"].get(name, {})
        d = {k: (row[k] - old.get(k, 0)) / messages for k in ("n_tup_ins", "n_tup_upd", "n_tup_hot_upd", "n_tup_del")}
        if not any(d.values()):
            continue
        lines.append(f"{name:22} inserted {d['n_tup_ins']:.2f}, updated {d['n_tup_upd']:.2f} "
                     f"(HOT {d['n_tup_hot_upd']:.2f}), deleted {d['n_tup_del']:.2f} per message; "
                     f"{row['indexes']} indexes")
    for name, row in sorted(after["functions"].items()):
        old = before["functions"].get(name, {})
        calls = row["calls"] - old.get("calls", 0)
        if calls:
            lines.append(f"{name + '()':22} {calls / messages:.2f} calls per message, "
                         f"{(row['total_time'] - old.get('total_time', 0)) / messages * 1000:.0f} µs per message "
                         "inside it (wall time, lock waits included)")
    wal = {k: (after["wal"].get(k, 0) - before["wal"].get(k, 0)) / messages for k in after["wal"]}
    lines.append(f"WAL: {wal.get('wal_records', 0):.1f} records, {wal.get('wal_bytes', 0):.0f} bytes, "
                 f"{wal.get('wal_sync', 0):.2f} syncs per message")
    return lines
