"""The Logs tab's queries are served by indexes: EXPLAIN of each filter shape on a generated log.

bench/dashboard_logs.py runs the same shapes on a million rows with timings beside the plan without
these indexes; here a smaller log (generate_series) keeps the test quick while the planner still has
to choose: a big account holding most rows and a small one beside it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from relay.store.dashboard import Cursor, LogFilter, log_query
from relay.store.store import Store

GENERATE = """
INSERT INTO messages (id, channel, status, key_id, account_id, sender, recipient_count, size_bytes,
                      credits_charged, credits_refunded, created_at, updated_at)
SELECT gen_random_uuid(), CASE WHEN c < 0.6 THEN 'api' ELSE 'smtp' END,
       CASE WHEN s < 0.94 THEN 'sent' WHEN s < 0.97 THEN 'failed' WHEN s < 0.99 THEN 'queued' ELSE 'sending' END,
       'k', $2, 'app' || floor(f * 20)::int || '@example.com', 1, 1000, 1, 0,
       now() - make_interval(secs => d * 90 * 86400), now()
  FROM (SELECT random() AS s, random() AS c, random() AS f, random() AS d FROM generate_series(1, $1)) AS r
"""


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


async def _plan(store: Store, sql: str, args: list[Any]) -> list[dict[str, Any]]:
    raw = await store.pool.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    return _nodes(json.loads(raw)[0]["Plan"])


async def test_every_log_filter_is_served_by_an_index(store: Store) -> None:
    big = await store.create_account("big")
    small = await store.create_account("small")
    other = await store.create_account("other")
    await store.pool.execute(GENERATE, 60_000, big.id)
    await store.pool.execute(GENERATE, 600, small.id)
    await store.pool.execute(GENERATE, 30_000, other.id)
    await store.pool.execute("ANALYZE messages")
    today = datetime.now(UTC).date()
    middle = await store.pool.fetchrow("SELECT created_at, id FROM messages WHERE account_id = $1 "
                                       "ORDER BY created_at DESC, id DESC OFFSET 300 LIMIT 1", small.id)
    # each shape, and the column its filter must find in the index condition (not in a row filter)
    shapes = {
        "no filter": (LogFilter(), None, "account_id"),
        "cursor": (LogFilter(), Cursor(middle["created_at"], middle["id"]), "created_at"),
        "status": (LogFilter(status="failed"), None, "status"),
        "channel": (LogFilter(channel="smtp"), None, "channel"),
        "sender": (LogFilter(sender="app7@example.com"), None, "sender"),
        "dates": (LogFilter(since=today - timedelta(days=40), until=today - timedelta(days=30)), None,
                  "created_at"),
        "status+dates+cursor": (LogFilter(status="failed", since=today - timedelta(days=60)),
                                Cursor(datetime.now(UTC) - timedelta(days=10), uuid.UUID(int=0)), "status"),
    }
    for account in (big, small):
        for name, (where, after, column) in shapes.items():
            sql, args = log_query(account.id, where, after, 51)
            nodes = await _plan(store, sql, args)
            kinds = [n["Node Type"] for n in nodes]
            what = f"{name} on account {account.name}: {kinds}"
            assert kinds[0] == "Limit", what
            assert "Seq Scan" not in kinds, what
            assert "Sort" not in kinds, what  # the index gives the order; an Incremental Sort only breaks ties
            scans = [n for n in nodes if n["Node Type"] in ("Index Scan", "Index Only Scan")]
            assert scans, what
            if account is small:  # a small account beside big ones must be read through its own index
                assert all(n["Index Name"].startswith("messages_account_") for n in scans), \
                    f"{what} {[n['Index Name'] for n in scans]}"
                assert any(column in n.get("Index Cond", "") for n in scans), \
                    f"{what}: {column} not in {[n.get('Index Cond') for n in scans]}"
    # and the queries return what they say, newest first, in pages that do not overlap
    sql, args = log_query(small.id, LogFilter(status="sent"), None, 1000)
    rows = await store.pool.fetch(sql, *args)
    assert rows and all(r["status"] == "sent" and r["account_id"] == small.id for r in rows)
    assert [(r["created_at"], r["id"]) for r in rows] == sorted(((r["created_at"], r["id"]) for r in rows),
                                                                reverse=True)
