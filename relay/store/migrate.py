"""Numbered, forward-only SQL migrations, recorded in schema_migrations, applied under an advisory lock;
then the current SQL functions (relay/store/functions/), which the migrations do not repeat."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

_LOCK_ID = 0x72656C6179  # 'relay': one migrator at a time across all instances
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """The migrations shipped with this version, in order."""
    found = []
    for entry in resources.files("relay.store").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations are not numbered 1..n without gaps: {versions}")
    return found


@dataclass(frozen=True, slots=True)
class Function:
    """One SQL function's current definition (relay/store/functions/<name>.sql)."""

    name: str
    sql: str


def functions() -> list[Function]:
    """The SQL functions as this version defines them; applied after the numbered migrations, so a
    function is written once, here, and never again in a migration."""
    found = [Function(entry.name.removesuffix(".sql"), entry.read_text())
             for entry in resources.files("relay.store").joinpath("functions").iterdir()
             if entry.name.endswith(".sql")]
    return sorted(found, key=lambda f: f.name)


def _has_statements(sql: str) -> bool:
    """Anything but comments and blank lines (PostgreSQL answers an empty query with no status)."""
    return any(line.strip() and not line.strip().startswith("--") for line in sql.splitlines())


async def applied(conn: asyncpg.Connection) -> set[int]:
    """Versions already recorded in the database (empty when it was never migrated)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return set()
    return {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply what is missing, each migration in its own transaction; return what was applied."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = await applied(conn)
        shipped = available()
        unknown = done - {m.version for m in shipped}
        if unknown:
            raise RuntimeError(
                f"the database has migrations this version does not know: {sorted(unknown)}; "
                "run a newer relay"
            )
        ran = []
        for migration in shipped:
            if migration.version in done:
                continue
            async with conn.transaction():
                if _has_statements(migration.sql):  # a function-only change keeps its number, and no SQL
                    await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version, migration.name,
                )
            ran.append(migration)
        async with conn.transaction():
            for function in functions():
                await conn.execute(function.sql)
        return ran
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


async def pending(conn: asyncpg.Connection) -> list[Migration]:
    """Migrations not yet applied."""
    done = await applied(conn)
    return [m for m in available() if m.version not in done]
