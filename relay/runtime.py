"""What every command needs before it can work: the key secret and a reachable, migrated database."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg

from relay.config import Config
from relay.embedded import EmbeddedPostgres
from relay.errors import ListenError, NotMigrated, StoreUnavailable
from relay.store import migrate
from relay.store.base import DATABASE_ERRORS
from relay.store.store import Store

__all__ = ["ListenError", "NotMigrated", "database", "ensure_database", "key_secret"]


def key_secret(cfg: Config) -> bytes:
    """The HMAC key for API key digests: from the config, else created once in the data folder."""
    if cfg.server.key_secret:
        return cfg.server.key_secret.encode()
    path = Path(cfg.server.data_dir) / "key_secret"
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(value)
    return value


async def ensure_database(admin_dsn: str, name: str) -> None:
    """Create database name if it does not exist (embedded server only)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def migrate_database(dsn: str, *, check_only: bool = False) -> list[migrate.Migration]:
    """Apply pending migrations (or, check_only, raise NotMigrated when some are pending)."""
    conn = await asyncpg.connect(dsn)
    try:
        if not check_only:
            return await migrate.migrate(conn)
        if await migrate.pending(conn):
            raise NotMigrated("the database is not migrated: run `relay migrate`")
        return []
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def database(cfg: Config, *, auto_migrate: bool = False, pool_size: int | None = None,
                   on_embedded: Callable[[EmbeddedPostgres], None] | None = None) -> AsyncIterator[Store]:
    """A Store on the configured database, or on the embedded one (started and stopped here).

    The embedded database is always migrated (it is ours); an external one only with auto_migrate,
    otherwise a pending migration raises NotMigrated.
    """
    embedded: EmbeddedPostgres | None = None
    dsn = cfg.database.url
    if not dsn:
        embedded = EmbeddedPostgres(Path(cfg.server.data_dir) / "postgres")
        embedded.start()
        auto_migrate = True
        if on_embedded is not None:
            on_embedded(embedded)
    try:
        try:
            if embedded is not None:
                await ensure_database(embedded.dsn("postgres"), "relay")
                dsn = embedded.dsn("relay")
            await migrate_database(dsn, check_only=not auto_migrate)
            store = await Store.connect(dsn, max_size=pool_size or cfg.database.pool_size)
        except DATABASE_ERRORS as exc:
            raise StoreUnavailable(f"database: {exc}") from exc
        try:
            yield store
        finally:
            await store.close()
    finally:
        if embedded is not None:
            embedded.stop()
