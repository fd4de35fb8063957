"""`relay dev` honours the listen and TLS settings: two instances side by side, TLS tried locally."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from pathlib import Path

import httpx
import pytest
import trustme

from relay.config import load_config
from relay.devmode import DEV_HTTP_LISTEN, DEV_SMTP_LISTEN, dev_config, explicit_keys
from tests.dev_helpers import dev_env, send_with_smtplib, start_dev, stop


def delivered(data: Path) -> list[bytes]:
    """The messages in the dev Maildir."""
    folder = data / "maildir" / "new"
    return [path.read_bytes() for path in folder.iterdir()] if folder.exists() else []


def test_dev_defaults_apply_only_where_nothing_was_set(tmp_path: Path) -> None:
    plain = dev_config(load_config(None, env={}), str(tmp_path), explicit_keys(None, {}))
    assert (plain.smtp.listen, plain.http.listen) == (DEV_SMTP_LISTEN, DEV_HTTP_LISTEN)
    assert plain.smtp.allow_plaintext_auth and plain.smtp.hostname == "localhost"
    assert plain.database.url == "" and plain.upstream.url == f"maildir:{tmp_path / 'maildir'}"

    config = tmp_path / "relay.toml"
    config.write_text('[smtp]\nlisten = "127.0.0.1:587"\ntls_cert = "c.pem"\ntls_key = "k.pem"\n'
                      'implicit_tls_listen = "127.0.0.1:465"\n[database]\nurl = "postgresql://x/y"\n')
    env = {"RELAY_HTTP_LISTEN": "127.0.0.1:9000", "RELAY_SMTP_HOSTNAME": "mail.test"}
    assert explicit_keys(str(config), env) >= {"smtp.listen", "smtp.tls_cert", "http.listen", "smtp.hostname"}
    cfg = dev_config(load_config(config, env=env), str(tmp_path), explicit_keys(str(config), env))
    # the user's listen address (even the production default) and TLS keys stand
    assert (cfg.smtp.listen, cfg.smtp.implicit_tls_listen, cfg.http.listen) == (
        "127.0.0.1:587", "127.0.0.1:465", "127.0.0.1:9000")
    assert (cfg.smtp.tls_cert, cfg.smtp.tls_key, cfg.smtp.hostname) == ("c.pem", "k.pem", "mail.test")
    assert cfg.database.url == ""  # dev always runs its own database

    # AUTH without TLS is the dev default on loopback only
    wide = dev_config(load_config(None, env={"RELAY_SMTP_LISTEN": "0.0.0.0:2525"}), str(tmp_path),
                      explicit_keys(None, {"RELAY_SMTP_LISTEN": "0.0.0.0:2525"}))
    assert not wide.smtp.allow_plaintext_auth


async def test_two_dev_instances_side_by_side_both_send(tmp_dir: Path) -> None:
    env = dev_env(RELAY_SMTP_LISTEN="127.0.0.1:0", RELAY_HTTP_LISTEN="127.0.0.1:0")
    folders = [tmp_dir / "one", tmp_dir / "two"]
    devs = await asyncio.gather(*(start_dev(folder, env=env) for folder in folders))
    try:
        smtp = [dev.address("SMTP") for dev in devs]
        http = [dev.address("HTTP") for dev in devs]
        ports = {port for _, port in smtp + http}
        assert 0 not in ports and len(ports) == 4  # what it actually listens on, all distinct
        for dev, folder, address in zip(devs, folders, smtp, strict=True):
            await asyncio.to_thread(send_with_smtplib, dev.key, *address, body=f"smtp to {folder.name}")
        async with httpx.AsyncClient() as client:
            for dev, folder in zip(devs, folders, strict=True):
                response = await client.post(dev.url(), headers={"Authorization": f"Bearer {dev.key}"},
                                             json={"from": "demo@example.com", "to": "you@example.net",
                                                   "subject": "hi", "text": f"http to {folder.name}"})
                assert response.status_code == 200, response.text
        for folder, other in zip(folders, reversed(folders), strict=True):
            messages = delivered(folder)
            assert len(messages) == 2
            assert all(f"to {folder.name}".encode() in m and f"to {other.name}".encode() not in m for m in messages)
    finally:
        codes = await asyncio.gather(*(stop(dev) for dev in devs))
    assert codes == [0, 0]


@pytest.fixture
def tls_files(tmp_dir: Path) -> dict[str, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"cert": tmp_dir / "cert.pem", "key": tmp_dir / "key.pem", "ca": tmp_dir / "ca.pem"}
    cert.private_key_and_cert_chain_pem.write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    return files


async def test_dev_serves_tls_from_the_config(tmp_dir: Path, tls_files: dict[str, Path]) -> None:
    config = tmp_dir / "relay.toml"
    cert, key = tls_files["cert"], tls_files["key"]
    config.write_text(
        f'[smtp]\nlisten = "127.0.0.1:0"\nimplicit_tls_listen = "127.0.0.1:0"\nallow_plaintext_auth = false\n'
        f'tls_cert = "{cert}"\ntls_key = "{key}"\n'
        f'[http]\nlisten = "127.0.0.1:0"\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    data = tmp_dir / "relay-data"
    dev = await start_dev(data, args=("--config", str(config)))
    trust = ssl.create_default_context(cafile=str(tls_files["ca"]))
    try:
        assert "STARTTLS offered" in dev.line("SMTP") and dev.url().startswith("https://")
        with pytest.raises(smtplib.SMTPNotSupportedError):  # allow_plaintext_auth = false is honoured
            await asyncio.to_thread(send_with_smtplib, dev.key, *dev.address("SMTP"))
        await asyncio.to_thread(send_with_smtplib, dev.key, *dev.address("SMTP"), body="over starttls",
                                starttls=trust)
        await asyncio.to_thread(send_with_smtplib, dev.key, *dev.address("SMTPS"), body="over smtps",
                                implicit=trust)
        async with httpx.AsyncClient(verify=trust) as client:
            response = await client.post(dev.url(), headers={"Authorization": f"Bearer {dev.key}"},
                                         json={"from": "demo@example.com", "to": "you@example.net",
                                               "subject": "hi", "text": "over https"})
        assert response.status_code == 200, response.text
        bodies = b"".join(delivered(data))
        assert all(text in bodies for text in (b"over starttls", b"over smtps", b"over https"))
        assert len(delivered(data)) == 3
    finally:
        assert await stop(dev) == 0
