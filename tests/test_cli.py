"""The real `relay` command against a real database: JSON output, errors as one line, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

import pytest

from relay import keys
from relay.store import migrate
from tests.conftest import KEY_SECRET, rcpts

RELAY = str(Path(sys.executable).parent / "relay")


async def run(db_dsn: str | None, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    environment["RELAY_SERVER_KEY_SECRET"] = KEY_SECRET.decode()
    if db_dsn:
        environment["RELAY_DATABASE_URL"] = db_dsn
    environment.update(env or {})
    proc = await asyncio.create_subprocess_exec(RELAY, *args, env=environment, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


def assert_one_line_error(code: int, err: str, expected: str) -> None:
    assert code != 0
    assert err.startswith("relay: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert expected in err, err


async def test_account_lifecycle_json(db_dsn, store) -> None:
    code, out, _ = await run(db_dsn, "account", "create", "acme", "--credits", "50", "--json")
    assert code == 0
    created = json.loads(out)
    assert created["name"] == "acme" and created["credits"] == 50 and isinstance(created["id"], int)
    code, out, _ = await run(db_dsn, "credits", "add", "acme", "25", "--json")
    assert json.loads(out)["credits"] == 75
    for ref in ("acme", str(created["id"])):
        code, out, _ = await run(db_dsn, "account", "show", ref, "--json")
        shown = json.loads(out)
        assert (shown["id"], shown["name"], shown["credits"]) == (created["id"], "acme", 75)
    code, out, _ = await run(db_dsn, "--json", "account", "list")
    assert [a["name"] for a in json.loads(out)] == ["acme"]
    assert await store.ledger_balance(created["id"]) == 75


async def test_sender_and_key_commands(db_dsn, store) -> None:
    await run(db_dsn, "account", "create", "acme")
    code, out, _ = await run(db_dsn, "sender", "add", "acme", "App@Example.com", "--daily-cap", "5", "--json")
    assert code == 0 and json.loads(out)["pattern"] == "app@example.com"
    code, out, _ = await run(db_dsn, "key", "create", "acme", "--name", "web", "--rate", "30", "--json")
    created = json.loads(out)
    parsed = keys.parse_key(created["key"])
    assert parsed is not None and parsed.key_id == created["id"]
    principal = await store.load_principal(created["id"])
    assert keys.verify(KEY_SECRET, parsed.secret, principal.digest)
    assert principal.senders[0].daily_cap == 5
    code, out, _ = await run(db_dsn, "key", "disable", created["id"], "--json")
    assert json.loads(out)["enabled"] is False
    code, out, _ = await run(db_dsn, "key", "enable", created["id"], "--json")
    assert json.loads(out)["enabled"] is True
    code, out, _ = await run(db_dsn, "key", "rotate", created["id"], "--json")
    rotated = json.loads(out)
    new = keys.parse_key(rotated["key"])
    principal = await store.load_principal(created["id"])
    assert keys.verify(KEY_SECRET, new.secret, principal.digest)
    assert not keys.verify(KEY_SECRET, parsed.secret, principal.digest)  # the old secret is dead


async def test_logs_and_queue_json(db_dsn, store) -> None:
    account = await store.create_account("acme", 10)
    await store.create_key("0123456789ab", account.id, b"x", "k", None)
    sent, queued = uuid.uuid4(), uuid.uuid4()
    await store.admit(sent, "smtp", "0123456789ab", account.id, "a@example.com", rcpts(2), 100, 1, 1000)
    await store.finalize(sent, "failed", 2, "550 5.1.1 no such user", 2001)
    await store.admit(queued, "api", "0123456789ab", account.id, "a@example.com", rcpts(1), 100, 1, 0)
    code, out, _ = await run(db_dsn, "logs", "--account", "acme", "--json")
    rows = {r["id"]: r for r in json.loads(out)}
    row = rows[str(sent)]
    assert (row["channel"], row["status"], row["failure_code"]) == ("smtp", "failed", 2001)
    assert (row["credits_charged"], row["credits_refunded"]) == (2, 2)
    code, out, _ = await run(db_dsn, "logs", "--status", "queued", "--channel", "api", "--json")
    assert [r["id"] for r in json.loads(out)] == [str(queued)]
    code, out, _ = await run(db_dsn, "queue", "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [str(queued)]


@pytest.mark.parametrize(("args", "expected"), [
    (("account", "show", "nobody"), "no account 'nobody'"),
    (("credits", "add", "nobody", "5"), "no account 'nobody'"),
    (("credits", "add", "acme", "-5"), "N must be a whole number greater than 0"),
    (("credits", "add", "acme", "lots"), "N must be a whole number greater than 0"),
    (("account", "create", "acme"), "already exists"),
    (("account", "create", "123"), "must not be empty or all digits"),
    (("sender", "add", "acme", "not an address"), "not an email address or domain"),
    (("key", "disable", "ffffffffffff"), "no key 'ffffffffffff'"),
    (("key", "create", "acme", "--rate", "0"), "--rate must be a whole number greater than 0"),
    (("logs", "--status", "weird"), "invalid choice"),
    (("frobnicate",), "invalid choice"),
])
async def test_bad_input_is_one_line_and_nonzero(db_dsn, store, args, expected) -> None:
    await store.create_account("acme")
    code, out, err = await run(db_dsn, *args)
    assert_one_line_error(code, err, expected)
    assert out == ""


async def test_bad_config_exits_2(db_dsn) -> None:
    code, _, err = await run(db_dsn, "account", "list", env={"RELAY_LIMITS_CALLS_PER_MINUTE": "x"})
    assert code == 2
    assert_one_line_error(code, err, "limits.calls_per_minute")


async def test_unreachable_database_is_one_line(tmp_dir) -> None:
    dsn = f"postgresql://relay@/relay?host={tmp_dir}&port=1"
    code, _, err = await run(dsn, "account", "list")
    assert_one_line_error(code, err, "database")


async def test_unmigrated_database_says_run_migrate(pg) -> None:
    import asyncpg
    name = f"u_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg.admin_dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        code, _, err = await run(pg.dsn(name), "account", "list")
        assert_one_line_error(code, err, "run `relay migrate`")
        code, out, _ = await run(pg.dsn(name), "migrate", "--json")
        shipped = [f"{m.version:04d}_{m.name}" for m in migrate.available()]
        assert code == 0 and json.loads(out)["applied"] == shipped and shipped[0] == "0001_init"
        code, out, _ = await run(pg.dsn(name), "migrate")
        assert code == 0 and out.strip() == "up to date"
        code, out, _ = await run(pg.dsn(name), "account", "list")
        assert code == 0 and out.strip() == "no accounts"
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()
