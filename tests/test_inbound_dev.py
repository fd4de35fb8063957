"""`relay dev` serves the inbound listener (127.0.0.1:2526, beside a chosen SMTP address on a free port)
with private targets allowed: a route made with `relay route add` and a swaks message arrive at an app
on this machine, as the README shows."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
import standardwebhooks

from relay.config import load_config
from relay.devmode import DEV_INBOUND_LISTEN, dev_config, explicit_keys
from tests.dev_helpers import ANY_PORTS, RELAY, dev_env, start_dev, stop
from tests.http_target import serve_target

SWAKS = shutil.which("swaks")


def test_dev_inbound_defaults(tmp_path: Path) -> None:
    plain = dev_config(load_config(None, env={}), str(tmp_path), explicit_keys(None, {}))
    assert (plain.inbound.listen, plain.inbound.allow_private_targets) == (DEV_INBOUND_LISTEN, True)
    assert DEV_INBOUND_LISTEN == "127.0.0.1:2526"
    beside = dev_config(load_config(None, env=ANY_PORTS), str(tmp_path), explicit_keys(None, ANY_PORTS))
    assert beside.inbound.listen == "127.0.0.1:0"
    chosen = {"RELAY_INBOUND_LISTEN": "127.0.0.1:2600", "RELAY_INBOUND_ALLOW_PRIVATE_TARGETS": "false"}
    cfg = dev_config(load_config(None, env=chosen), str(tmp_path), explicit_keys(None, chosen))
    assert (cfg.inbound.listen, cfg.inbound.allow_private_targets) == ("127.0.0.1:2600", False)


def test_dev_lets_webhooks_reach_local_apps_unless_told_not_to(tmp_path: Path) -> None:
    plain = dev_config(load_config(None, env={}), str(tmp_path), explicit_keys(None, {}))
    assert plain.webhooks.allow_private_targets is True
    strict = {"RELAY_WEBHOOKS_ALLOW_PRIVATE_TARGETS": "false"}
    cfg = dev_config(load_config(None, env=strict), str(tmp_path), explicit_keys(None, strict))
    assert cfg.webhooks.allow_private_targets is False


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
    dev = await start_dev(data, env=dev_env(**ANY_PORTS))
    try:
        host, port = dev.address("inbound")
        assert host == "127.0.0.1" and port != 0
        async with serve_target() as app:
            code, _, err = await relay_cli(data, "route", "add", "demo", "*@inbound.example", app.url("/status/200"))
            assert code != 0 and "loopback" in err  # the operator must say so for a private URL
            code, out, err = await relay_cli(data, "route", "add", "demo", "*@inbound.example",
                                             app.url("/status/200"), "--allow-private", "--json")
            assert code == 0, err
            secret = json.loads(out)["signing_secret"]
            assert SWAKS is not None
            swaks = await asyncio.create_subprocess_exec(
                SWAKS, "--server", f"{host}:{port}", "--from", "someone@example.org", "--to", "support@inbound.example",
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
        assert await stop(dev) == 0
