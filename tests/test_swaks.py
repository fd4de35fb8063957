"""swaks, the operator's SMTP test tool, against the relay: success and the documented rejections."""

from __future__ import annotations

import asyncio
import shutil

import pytest

SWAKS = shutil.which("swaks")
pytestmark = pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (apt-get install swaks)")


async def swaks(port: int, *args: str) -> tuple[int, str]:
    assert SWAKS is not None
    proc = await asyncio.create_subprocess_exec(
        SWAKS, "--server", f"127.0.0.1:{port}", "--timeout", "10", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_swaks_auth_plain_sends(relay) -> None:
    t = await relay.tenant(credits=10)
    code, out = await swaks(relay.port, "--auth", "PLAIN", "--auth-user", "app", "--auth-password", t.key,
                            "--from", t.sender, "--to", "you@dest.test", "--header", f"From: {t.sender}")
    assert code == 0, out
    assert "<-  250 OK: " in out
    assert len(relay.peer.messages) == 1 and relay.peer.messages[0].recipients == ["you@dest.test"]
    assert await relay.balance(t) == 9


async def test_swaks_auth_login_wrong_key_is_535(relay) -> None:
    t = await relay.tenant(credits=10)
    code, out = await swaks(relay.port, "--auth", "LOGIN", "--auth-user", "app",
                            "--auth-password", "rk_000000000000_wrong", "--from", t.sender, "--to", "a@dest.test")
    assert code != 0
    assert "<** 535 5.7.8" in out
    assert relay.peer.messages == [] and await relay.balance(t) == 10


async def test_swaks_unauthorized_sender_is_550(relay) -> None:
    t = await relay.tenant(credits=10)
    code, out = await swaks(relay.port, "--auth", "PLAIN", "--auth-user", "app", "--auth-password", t.key,
                            "--from", "intruder@elsewhere.test", "--to", "a@dest.test")
    assert code != 0
    assert "<** 550 5.7.1" in out
    assert relay.peer.messages == [] and await relay.balance(t) == 10
