"""`relay dev` serves the inbound listener on 127.0.0.1:2526 with private targets allowed: a route made
with `relay route add` and a swaks message arrive at an app on this machine, as the README shows."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
import standardwebhooks

from tests.http_target import serve_target
from tests.test_dev import RELAY, start_dev, stop

SWAKS = shutil.which("swaks")


async def relay_cli(data: Path, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["RELAY_SERVER_DATA_DIR"] = str(data)
    proc = await asyncio.create_subprocess_exec(RELAY, *args, env=env, cwd=str(data.parent),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (apt-get install swaks)")
async def test_dev_inbound_route_and_swaks(tmp_dir: Path) -> None:
    data = tmp_dir / "relay-data"
    proc, _key = await start_dev(data)
    try:
        async with serve_target() as app:
            code, _, err = await relay_cli(data, "route", "add", "demo", "*@inbound.example", app.url("/status/200"))
            assert code != 0 and "loopback" in err  # the operator must say so for a private URL
            code, out, err = await relay_cli(data, "route", "add", "demo", "*@inbound.example",
                                             app.url("/status/200"), "--allow-private", "--json")
            assert code == 0, err
            secret = json.loads(out)["signing_secret"]
            assert SWAKS is not None
            swaks = await asyncio.create_subprocess_exec(
                SWAKS, "--server", "127.0.0.1:2526", "--from", "someone@example.org", "--to", "support@inbound.example",
                "--header", "Subject: my printer", "--body", "It is on fire.",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            said, _ = await swaks.communicate()
            assert swaks.returncode == 0 and "250 2.0.0 OK: delivered to the application" in said.decode()
            [got] = app.received
            doc = standardwebhooks.Webhook(secret).verify(got.body, got.headers)
            assert doc["headers"]["subject"] == "my printer" and doc["plain"].strip() == "It is on fire."
            code, out, _ = await relay_cli(data, "inbound", "logs", "--json")
            [row] = json.loads(out)
            assert (row["http_status"], row["recipients"]) == (200, ["support@inbound.example"])
    finally:
        assert await stop(proc) == 0
