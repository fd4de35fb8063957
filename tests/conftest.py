"""Shared fixtures: a real PostgreSQL (migrated template, fresh copy per test), upstream peers, a live relay."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg
import pytest

from relay import keys
from relay.config import Config, load_config
from relay.embedded import EmbeddedPostgres
from relay.server import RelayServer
from relay.store import migrate
from relay.store.store import Store
from tests.peer import Peer

T = TypeVar("T")

KEY_SECRET = b"test-key-secret"
TEMPLATE = "relay_template"


async def eventually(condition: Callable[[], Awaitable[bool]] | Callable[[], bool], *,
                     timeout: float = 10.0, interval: float = 0.02, what: str = "") -> None:
    """Wait until condition() is true (it may be sync or async), or fail the test after timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if loop.time() >= deadline:
            pytest.fail(f"condition not met within {timeout} s: {what or getattr(condition, '__name__', condition)}")
        await asyncio.sleep(interval)


def rcpts(n: int) -> list[str]:
    """n distinct recipient addresses (for calling the store directly)."""
    return [f"r{i}@dest.test" for i in range(n)]


@dataclass(frozen=True)
class PgServer:
    """How to reach the test PostgreSQL: admin DSN and a DSN factory per database."""

    admin_dsn: str
    base: str  # DSN with a {db} placeholder

    def dsn(self, db: str) -> str:
        return self.base.format(db=db)


def _dsn_with_db(dsn: str, db: str) -> str:
    head, sep, query = dsn.partition("?")
    scheme_host, _, _old = head.rpartition("/")
    return f"{scheme_host}/{db}{sep}{query}"


async def _make_template(admin_dsn: str, template_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(template_dsn)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """A PostgreSQL for the whole run: RELAY_TEST_DSN if set, else the embedded launcher."""
    external = os.environ.get("RELAY_TEST_DSN")
    folder = None
    server = None
    if external:
        admin = external
    else:
        folder = tempfile.mkdtemp(prefix="relay-test-pg-")
        server = EmbeddedPostgres(folder, durable=False)
        server.start()
        admin = server.dsn("postgres")
    base = _dsn_with_db(admin, "{db}")
    asyncio.run(_make_template(admin, base.format(db=TEMPLATE)))
    try:
        yield PgServer(admin, base)
    finally:
        if server is not None:
            server.stop()
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def db_dsn(pg: PgServer) -> AsyncIterator[str]:
    """A fresh, migrated database for one test (a copy of the template)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg.admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    finally:
        await conn.close()
    yield pg.dsn(name)
    conn = await asyncpg.connect(pg.admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
async def store(db_dsn: str) -> AsyncIterator[Store]:
    """A Store on the test's database."""
    s = await Store.connect(db_dsn, max_size=20)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    """A recording upstream SMTP server on port 0."""
    p = await Peer().start()
    try:
        yield p
    finally:
        await p.stop()


@dataclass
class Tenant:
    """An account with a key, as the tests use it."""

    account_id: int
    key: str
    key_id: str
    sender: str


@dataclass
class LiveRelay:
    """A running relay server plus helpers to set up accounts."""

    server: RelayServer
    store: Store
    cfg: Config
    peer: Peer
    tenants: list[Tenant] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port("smtp")

    async def tenant(self, credits: int = 100, *, sender: str = "app@example.com",
                     daily_cap: int | None = None, rate: int | None = None,
                     extra_senders: tuple[str, ...] = ()) -> Tenant:
        account = await self.store.create_account(f"acct-{uuid.uuid4().hex[:8]}", credits)
        await self.store.add_sender(account.id, sender, daily_cap)
        for extra in extra_senders:
            await self.store.add_sender(account.id, extra, None)
        key_id, secret = keys.new_key_id(), keys.new_secret()
        await self.store.create_key(key_id, account.id, keys.digest(KEY_SECRET, secret), "test", rate)
        tenant = Tenant(account.id, keys.format_key(key_id, secret), key_id, sender)
        self.tenants.append(tenant)
        return tenant

    async def balance(self, tenant: Tenant) -> int:
        """The balance, after checking it equals what the ledger says."""
        balance = await self.store.balance(tenant.account_id)
        assert balance == await self.store.ledger_balance(tenant.account_id)
        return balance


@contextlib.asynccontextmanager
async def database_unreachable(live: LiveRelay, admin_dsn: str) -> AsyncIterator[None]:
    """The relay's database refuses connections and drops the ones it had, until the block ends."""
    db = urlsplit(live.cfg.database.url).path.lstrip("/")
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", db)
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        await admin.close()
        # A dropped connection whose FATAL notice has been read but whose end of stream has not
        # looks open to the pool for a moment (asyncpg then says "another operation (2) is in
        # progress"); the checks after the block start from fresh connections.
        await live.store.pool.expire_connections()


def relay_config(db_dsn: str, upstream_url: str, **sections: dict[str, object]) -> Config:
    """A test config: loopback listeners on port 0, plaintext AUTH, the given database and upstream."""
    cfg = load_config(None, env={})
    cfg = cfg.replace("database", url=db_dsn, pool_size=20)
    cfg = cfg.replace("server", key_secret=KEY_SECRET.decode(), recovery_after_seconds=300.0,
                      shutdown_grace_seconds=5.0)
    cfg = cfg.replace("smtp", listen="127.0.0.1:0", hostname="relay.test", allow_plaintext_auth=True)
    cfg = cfg.replace("http", listen="127.0.0.1:0")
    cfg = cfg.replace("upstream", url=upstream_url, timeout_seconds=5.0)
    cfg = cfg.replace("queue", worker=False)  # tests drive delivery themselves unless they ask for it
    cfg = cfg.replace("webhooks", allow_private_targets=True)  # the test receivers listen on loopback
    for section, values in sections.items():
        cfg = cfg.replace(section, **values)
    return cfg


async def start_relay(cfg: Config, store: Store, peer: Peer) -> LiveRelay:
    """Start a RelayServer on the running loop."""
    server = RelayServer(cfg, store, KEY_SECRET)
    await server.start()
    return LiveRelay(server, store, cfg, peer)


@contextlib.asynccontextmanager
async def running_relay(db_dsn: str, store: Store, peer: Peer,
                        **sections: dict[str, object]) -> AsyncIterator[LiveRelay]:
    """A live relay with these config sections (as relay_config takes them), stopped at the end."""
    live = await start_relay(relay_config(db_dsn, peer.url, **sections), store, peer)
    try:
        yield live
    finally:
        await live.server.stop(grace=1)


@pytest.fixture
async def relay(db_dsn: str, store: Store, peer: Peer) -> AsyncIterator[LiveRelay]:
    """A live relay relaying to the recording peer."""
    async with running_relay(db_dsn, store, peer) as live:
        yield live


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    """A temporary folder the PostgreSQL server user can pass through (pytest's own is root-only)."""
    folder = Path(tempfile.mkdtemp(prefix="relay-test-"))
    folder.chmod(0o711)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def lose_the_debit_race(live: LiveRelay, tenant: Tenant, send: Callable[[], Awaitable[T]]) -> T:
    """Run send while a concurrent spender holds the tenant's last credit (uncommitted): the send's
    pre-flight still sees the credit, its debit waits on the account row and then finds it spent,
    which is INSUFFICIENT_FUNDS. The spender commits once the debit is seen waiting."""
    other = await asyncpg.connect(live.cfg.database.url)
    pending: asyncio.Future[T] | None = None
    try:
        txn = other.transaction()
        await txn.start()
        await other.execute("UPDATE accounts SET credits = credits - 1 WHERE id = $1", tenant.account_id)
        await other.execute("INSERT INTO credit_ledger (account_id, delta, kind) VALUES ($1, -1, 'debit')",
                            tenant.account_id)
        pending = asyncio.ensure_future(send())
        for _ in range(250):
            if await other.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND wait_event_type = 'Lock'"):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the debit never waited for the concurrent spender")
        await txn.commit()
        return await pending
    finally:
        if pending is not None and not pending.done():  # the wait above failed: do not leave the send running
            pending.cancel()
        await other.close()


async def assert_untouched(live: LiveRelay, tenant: Tenant, balance: int) -> None:
    """Nothing relayed and the balance (and its ledger) as it was."""
    assert live.peer.messages == []
    assert await live.balance(tenant) == balance
