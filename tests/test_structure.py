"""Issue 11's review bugs and structure promises, on the real database."""

from __future__ import annotations

import asyncio
import re
import uuid

import asyncpg
import pytest

from relay.config import LimitsConfig, QueueConfig
from relay.errors import RelayError, StoreError, StoreUnavailable
from relay.queue import QueueWorker
from relay.store import migrate
from relay.store.store import Store
from relay.upstream.maildir import MaildirUpstream
from tests.conftest import eventually


async def test_find_account_under_a_generic_plan_never_casts_a_name(db_dsn: str) -> None:
    """A name such as 'acct5' must not be cast to bigint whatever plan PostgreSQL picks."""
    conn = await asyncpg.connect(db_dsn)
    try:
        name = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'ALTER DATABASE "{name}" SET plan_cache_mode = force_generic_plan')
    finally:
        await conn.close()
    store = await Store.connect(db_dsn, max_size=1)
    try:
        created = [await store.create_account(f"acct{i}") for i in range(7)]
        numeric = await store.create_account("team-1")
        for _ in range(3):  # the same prepared statement, reused: the generic plan is in force
            for account in created:
                assert (await store.find_account(account.name)).id == account.id
            assert (await store.find_account(str(numeric.id))).id == numeric.id
        with pytest.raises(StoreError, match="no account"):
            await store.find_account("acct99")
        with pytest.raises(StoreError, match="no account"):
            await store.find_account("99999999999999999999")  # digits, but beyond bigint
    finally:
        await store.close()


async def test_the_daily_cap_is_counted_per_account_and_sender(store: Store) -> None:
    """Two accounts authorized for one address each have their own cap (SPEC.md, Domain)."""
    a = await store.create_account("a", credits=10)
    b = await store.create_account("b", credits=10)
    for account in (a, b):
        await store.add_sender(account.id, "shared.example", daily_cap=1)
        await store.create_key(f"k{account.id}", account.id, b"d" * 32, "", None)

    async def admit(account_id: int) -> str:
        admission = await store.admit(uuid.uuid4(), "api", f"k{account_id}", account_id,
                                      "app@shared.example", ["r@dest.test"], 100, 1, 1)
        return admission.status

    assert await admit(a.id) == "sending"
    assert await admit(b.id) == "sending"  # A's mail does not use B's cap
    assert await admit(a.id) == "queued"
    assert await admit(b.id) == "queued"
    counts = await store.pool.fetch("SELECT account_id, sent FROM sender_day_counts ORDER BY account_id")
    assert [(r["account_id"], r["sent"]) for r in counts] == [(a.id, 1), (b.id, 1)]


async def test_the_queue_worker_listens_on_a_connection_of_its_own(db_dsn: str, tmp_path) -> None:
    """With a pool of one, a worker that LISTENed on a pool connection would starve every query."""
    store = await Store.connect(db_dsn, min_size=1, max_size=1)
    worker = QueueWorker(store, MaildirUpstream(str(tmp_path)), LimitsConfig(),
                         QueueConfig(poll_seconds=0.05))
    task = asyncio.create_task(worker.run())
    try:
        async def listening() -> bool:
            return bool(await store.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database()"))
        await eventually(listening)
        for _ in range(5):  # the pool's one connection stays free for everything else
            assert await asyncio.wait_for(store.queue_depth(), 2) == 0
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
        await store.close()


async def test_database_failures_leave_the_store_as_its_own_error(db_dsn: str) -> None:
    store = await Store.connect(db_dsn, max_size=1)
    await store.pool.close()  # nothing can reach the database any more
    with pytest.raises(StoreUnavailable) as caught:
        await store.balance(1)
    assert isinstance(caught.value, RelayError)


async def test_a_freshly_migrated_database_has_exactly_the_function_files(store: Store) -> None:
    """SQL functions are written once (relay/store/functions/); the database holds those bodies."""
    rows = await store.pool.fetch(
        "SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'public' AND p.proname LIKE 'relay\\_%'")
    in_db = {r["proname"]: r["prosrc"] for r in rows}
    files = {f.name: f.sql for f in migrate.functions()}
    assert set(in_db) == set(files)
    for name, sql in files.items():
        body = re.search(r"\$\$(.*)\$\$", sql, re.S)
        assert body is not None, name
        assert in_db[name] == body.group(1), name
    for migration in migrate.available():  # and no migration repeats one
        assert not re.search(r"CREATE (OR REPLACE )?FUNCTION", migration.sql), migration.name
