"""`relay dev` as a newcomer runs it: a key is printed, port 2525 takes mail, Ctrl-C leaves nothing behind."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import httpx

from tests.conftest import eventually
from tests.dev_helpers import ANY_PORTS, dev_env, postgres_running_on, send_with_smtplib, start_dev, stop


async def test_dev_prints_key_relays_to_maildir_and_stops_clean(tmp_dir: Path) -> None:
    data = tmp_dir / "relay-data"
    dev = await start_dev(data)
    key = dev.key
    try:
        assert key.startswith("rk_")
        assert dev.address("SMTP") == ("127.0.0.1", 2525) and dev.address("HTTP") == ("127.0.0.1", 8025)
        await asyncio.to_thread(send_with_smtplib, key)
        files = list((data / "maildir" / "new").iterdir())
        assert len(files) == 1 and b"it works" in files[0].read_bytes()
        async with httpx.AsyncClient() as client:
            response = await client.post("http://127.0.0.1:8025/v1/send", headers={"Authorization": f"Bearer {key}"},
                                         json={"from": "demo@example.com", "to": "you@example.net",
                                               "subject": "over http", "text": "via the API"})
        assert response.status_code == 200 and response.json()["status"] == "sent"
        assert len(list((data / "maildir" / "new").iterdir())) == 2
        assert postgres_running_on(data)
    finally:
        code = await stop(dev)
    assert code == 0
    assert not postgres_running_on(data)

    # a second run reuses the data and the demo account, and prints a fresh key
    dev = await start_dev(data)
    try:
        second_key = dev.key
        assert second_key.startswith("rk_") and second_key != key
        await asyncio.to_thread(send_with_smtplib, second_key)
        try:
            await asyncio.to_thread(send_with_smtplib, key)
            old_key_works = True
        except smtplib.SMTPAuthenticationError:
            old_key_works = False
        assert not old_key_works
        assert len(list((data / "maildir" / "new").iterdir())) == 3
    finally:
        assert await stop(dev) == 0
    assert not postgres_running_on(data)


async def test_dev_killed_hard_leaves_no_postgres(tmp_dir: Path) -> None:
    data = tmp_dir / "relay-data"
    dev = await start_dev(data, env=dev_env(**ANY_PORTS))
    assert postgres_running_on(data)
    dev.proc.kill()
    await dev.proc.wait()
    dev.log.close()
    await eventually(lambda: not postgres_running_on(data), what="the orphaned PostgreSQL stops")
