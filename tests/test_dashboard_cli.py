"""`relay user add|passwd|remove|list` and `relay dev`'s dashboard login, with the real command."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from relay.dashboard import passwords
from relay.store.store import Store
from tests.conftest import KEY_SECRET
from tests.dashboard_helpers import csrf_of
from tests.dev_helpers import ANY_PORTS, dev_env, send_with_smtplib, start_dev, stop
from tests.test_cli import RELAY, assert_one_line_error


async def relay(db_dsn: str, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """Run `relay ...` against the test database, with stdin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env |= {"RELAY_SERVER_KEY_SECRET": KEY_SECRET.decode(), "RELAY_DATABASE_URL": db_dsn}
    proc = await asyncio.create_subprocess_exec(RELAY, *args, env=env, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(stdin.encode())
    return proc.returncode or 0, out.decode(), err.decode()


async def test_user_commands(db_dsn: str, store: Store) -> None:
    account = await store.create_account("acme")
    code, out, err = await relay(db_dsn, "user", "add", "acme", "Ann@Acme.test", "--password-stdin", "--json",
                                 stdin="first password here\n")
    assert code == 0, err
    assert json.loads(out) == {"email": "ann@acme.test", "account": "acme", "operator": False}
    user = await store.find_user("ann@acme.test")
    assert user is not None and user.account_id == account.id and not user.operator
    assert user.password_hash.startswith("$argon2id$")
    assert passwords.verify_password("first password here", user.password_hash)
    # refusals, each one line: short password, taken email, unknown account, unknown user
    code, _, err = await relay(db_dsn, "user", "add", "acme", "bob@acme.test", "--password-stdin", stdin="short\n")
    assert_one_line_error(code, err, "at least 10 characters")
    code, _, err = await relay(db_dsn, "user", "add", "acme", "ann@acme.test", "--password-stdin",
                               stdin="another password\n")
    assert_one_line_error(code, err, "already exists")
    code, _, err = await relay(db_dsn, "user", "add", "nope", "x@acme.test", "--password-stdin", stdin="x" * 12)
    assert_one_line_error(code, err, "no account 'nope'")
    code, _, err = await relay(db_dsn, "user", "passwd", "ghost@acme.test", "--password-stdin", stdin="x" * 12)
    assert_one_line_error(code, err, "no user 'ghost@acme.test'")
    # an operator; passwd ends the sessions; list; remove
    code, _, err = await relay(db_dsn, "user", "add", "acme", "op@acme.test", "--operator", "--password-stdin",
                               stdin="operator password\n")
    assert code == 0, err
    await store.open_session(user, "token", "csrf", timedelta(hours=1))
    assert await store.session("token") is not None
    code, _, err = await relay(db_dsn, "user", "passwd", "ann@acme.test", "--password-stdin",
                               stdin="second password here\n")
    assert code == 0, err
    assert await store.session("token") is None
    changed = await store.find_user("ann@acme.test")
    assert changed is not None and passwords.verify_password("second password here", changed.password_hash)
    code, out, _ = await relay(db_dsn, "user", "list", "--json")
    assert [(u["email"], u["operator"]) for u in json.loads(out)] == [("ann@acme.test", False),
                                                                      ("op@acme.test", True)]
    code, _, err = await relay(db_dsn, "user", "remove", "ann@acme.test")
    assert code == 0, err
    assert await store.find_user("ann@acme.test") is None


async def test_dev_prints_a_dashboard_login_that_shows_the_sent_message(tmp_dir: Path) -> None:
    dev = await start_dev(tmp_dir / "relay-data", env=dev_env(**ANY_PORTS))
    try:
        line = dev.line("dashboard")  # "http://127.0.0.1:PORT/  (log in as EMAIL, password PASSWORD)"
        url = line.split()[0].rstrip("/")
        email = line.split("log in as ")[1].split(",")[0]
        password = line.split("password ")[1].rstrip(")")
        host, port = dev.address("SMTP")
        await asyncio.to_thread(send_with_smtplib, dev.key, host, port)
        async with httpx.AsyncClient(base_url=url) as client:
            form = await client.get("/login")
            logged_in = await client.post("/login", data={"csrf": csrf_of(form.text), "email": email,
                                                          "password": password, "next": "/logs"})
            assert logged_in.status_code == 303
            logs = await client.get("/logs")
            assert logs.status_code == 200 and "demo@example.com" in logs.text and ">sent<" in logs.text
    finally:
        assert await stop(dev) == 0


def test_dashboard_config_is_validated() -> None:
    from relay.config import ConfigError, load_config

    assert load_config(None, env={}).dashboard.listen == ""  # off unless asked for
    cfg = load_config(None, env={"RELAY_DASHBOARD_LISTEN": "127.0.0.1:8081"})
    assert cfg.dashboard.listen == "127.0.0.1:8081"
    for env, key in (({"RELAY_DASHBOARD_LISTEN": "nowhere"}, "dashboard.listen"),
                     ({"RELAY_DASHBOARD_TLS_CERT": "/x.pem"}, "dashboard.tls_cert"),
                     ({"RELAY_DASHBOARD_SESSION_HOURS": "0"}, "dashboard.session_hours"),
                     ({"RELAY_DASHBOARD_LOGIN_WINDOW_SECONDS": "100000"}, "dashboard.login_window_seconds")):
        with pytest.raises(ConfigError, match=key):
            load_config(None, env=env)
