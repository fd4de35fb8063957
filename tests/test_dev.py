"""`relay dev` as a newcomer runs it: a key is printed, port 2525 takes mail, Ctrl-C leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import httpx

RELAY = str(Path(sys.executable).parent / "relay")


async def start_dev(data_dir: Path) -> tuple[asyncio.subprocess.Process, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    proc = await asyncio.create_subprocess_exec(
        RELAY, "dev", "--data-dir", str(data_dir), env=env, cwd=str(data_dir.parent),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    key = ""
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line, "relay dev exited before printing a key"
        if line.strip().startswith("key "):
            key = line.split()[1]
        if "Ctrl-C" in line:
            return proc, key


def send_with_smtplib(key: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "demo@example.com", "you@example.net", "hello from dev"
    msg.set_content("it works")
    with smtplib.SMTP("127.0.0.1", 2525, timeout=10) as client:
        client.login("demo", key)
        client.send_message(msg)


def postgres_running_on(folder: Path) -> bool:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return any("postgres" in line and str(folder) in line for line in ps.splitlines())


async def stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGINT)
    return await asyncio.wait_for(proc.wait(), 30)


async def test_dev_prints_key_relays_to_maildir_and_stops_clean(tmp_dir: Path) -> None:
    data = tmp_dir / "relay-data"
    proc, key = await start_dev(data)
    try:
        assert key.startswith("rk_")
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
        code = await stop(proc)
    assert code == 0
    assert not postgres_running_on(data)

    # a second run reuses the data and the demo account, and prints a fresh key
    proc, second_key = await start_dev(data)
    try:
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
        assert await stop(proc) == 0
    assert not postgres_running_on(data)


async def test_dev_killed_hard_leaves_no_postgres(tmp_dir: Path) -> None:
    data = tmp_dir / "relay-data"
    proc, _ = await start_dev(data)
    proc.kill()
    await proc.wait()
    for _ in range(100):
        if not postgres_running_on(data):
            break
        await asyncio.sleep(0.1)
    assert not postgres_running_on(data)
