"""`relay serve` as systemd runs it: READY=1 once listening, mail relayed, SIGTERM drains and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

from tests.conftest import KEY_SECRET, LiveRelay
from tests.smtp_helpers import message, send

RELAY = str(Path(sys.executable).parent / "relay")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_notifies_systemd_relays_and_stops_on_sigterm(db_dsn, store, peer, tmp_dir) -> None:
    notify_path = tmp_dir / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.setblocking(False)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(RELAY_DATABASE_URL=db_dsn, RELAY_SERVER_KEY_SECRET=KEY_SECRET.decode(),
               RELAY_SMTP_LISTEN=f"127.0.0.1:{port}", RELAY_SMTP_ALLOW_PLAINTEXT_AUTH="true",
               RELAY_UPSTREAM_URL=peer.url, NOTIFY_SOCKET=str(notify_path),
               RELAY_SERVER_DATA_DIR=str(tmp_dir))
    proc = await asyncio.create_subprocess_exec(RELAY, "serve", env=env, stderr=asyncio.subprocess.DEVNULL)
    loop = asyncio.get_running_loop()
    try:
        ready = await asyncio.wait_for(loop.sock_recv(notify, 100), 30)
        assert ready == b"READY=1"
        live = LiveRelay(server=None, store=store, cfg=None, peer=peer)  # type: ignore[arg-type]
        t = await live.tenant(credits=5)
        reply = await send(port, t.key, t.sender, ["a@dest.test"], message(t.sender))
        assert reply.code == 250 and len(peer.messages) == 1
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(loop.sock_recv(notify, 100), 10) == b"STOPPING=1"
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert await live.balance(t) == 4
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        notify.close()


async def test_serve_on_a_busy_port_is_one_line(db_dsn, tmp_dir) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(RELAY_DATABASE_URL=db_dsn, RELAY_SERVER_KEY_SECRET=KEY_SECRET.decode(),
               RELAY_SMTP_LISTEN=f"127.0.0.1:{port}", RELAY_HTTP_LISTEN="127.0.0.1:0",
               RELAY_SERVER_DATA_DIR=str(tmp_dir))
    try:
        proc = await asyncio.create_subprocess_exec(RELAY, "serve", env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        busy.close()
    lines = [line for line in err.decode().splitlines() if line.startswith("relay: ")]
    assert proc.returncode == 1
    assert lines == [f"relay: smtp.listen: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert "Traceback" not in err.decode()


async def test_serve_with_a_certificate_it_cannot_load_is_one_line_naming_the_keys(db_dsn, tmp_dir) -> None:
    """Not 'relay: database: ...', which is what an unloadable certificate used to be reported as."""
    garbage = tmp_dir / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = {
        "SMTP": ({"RELAY_SMTP_TLS_CERT": str(tmp_dir / "missing.pem"), "RELAY_SMTP_TLS_KEY": str(garbage)},
                 f"relay: smtp.tls_cert/smtp.tls_key: cannot load {tmp_dir / 'missing.pem'} and {garbage}: "
                 "No such file or directory"),
        "HTTP": ({"RELAY_HTTP_TLS_CERT": str(garbage), "RELAY_HTTP_TLS_KEY": str(garbage)},
                 f"relay: http.tls_cert/http.tls_key: cannot load {garbage} and {garbage}: "),
    }
    for name, (extra, expected) in cases.items():
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        env.update(RELAY_DATABASE_URL=db_dsn, RELAY_SERVER_KEY_SECRET=KEY_SECRET.decode(),
                   RELAY_SMTP_LISTEN=f"127.0.0.1:{free_port()}", RELAY_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
                   RELAY_SERVER_DATA_DIR=str(tmp_dir), **extra)
        proc = await asyncio.create_subprocess_exec(RELAY, "serve", env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        lines = [line for line in err.decode().splitlines() if line.startswith("relay: ")]
        assert proc.returncode == 1, name
        assert len(lines) == 1 and lines[0].startswith(expected), (name, lines)
        assert "Traceback" not in err.decode() and "database" not in lines[0]
