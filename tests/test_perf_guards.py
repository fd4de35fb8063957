"""Guards for the speed-ups: they must not change what aiosmtpd sees, nor what the rate limit allows."""

from __future__ import annotations

import asyncio

from relay.smtp_server import RelaySMTP
from tests.smtp_helpers import Raw, message, send


async def test_cached_dir_keeps_aiosmtpd_method_tables_complete(relay) -> None:
    conn = RelaySMTP(relay.server.channel, loop=asyncio.get_running_loop())
    smtp_verbs = {n[5:] for n in object.__dir__(conn) if n.startswith("smtp_")}
    assert set(conn._smtp_methods) == smtp_verbs
    assert {"AUTH", "MAIL", "RCPT", "DATA", "STARTTLS", "EHLO", "QUIT"} <= smtp_verbs
    assert set(conn._auth_methods) == {"PLAIN", "LOGIN"}
    hooks = {n[7:] for n in object.__dir__(relay.server.channel) if n.startswith("handle_")}
    assert set(conn._handle_hooks) == hooks == {"EHLO", "MAIL", "RCPT", "PROXY"}


async def test_cached_address_parsing_matches_aiosmtpd(relay) -> None:
    conn = RelaySMTP(relay.server.channel, loop=asyncio.get_running_loop())
    from aiosmtpd.smtp import SMTP
    for arg in ("<a@b.test>", "<a@b.test> SIZE=10", "a@b.test", "<>", "<bad", "", "<\"q u\"@b.test>"):
        assert conn._getaddr(arg) == SMTP._getaddr(conn, arg), arg


async def test_rate_window_slides_by_the_second(relay) -> None:
    t = await relay.tenant(credits=100, rate=2)
    for _ in range(2):
        await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
    raw = await Raw.open(relay.port)
    await raw.auth(t.key)
    reply = await raw.cmd(f"MAIL FROM:<{t.sender}>")
    wait = int(reply.split("retry in ")[1].split()[0])
    assert reply.startswith("421") and 59 <= wait <= 61
    raw.close()
    # 61 seconds later (moved in the database rather than waited for) the window is empty again
    async with relay.store.pool.acquire() as conn:
        await conn.execute("UPDATE rate_windows SET second = second - 61")
    reply = await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
    assert reply.code == 250
    # 30 seconds after two calls, a window still holds them
    async with relay.store.pool.acquire() as conn:
        await conn.execute("UPDATE rate_windows SET counts = array_fill(0, ARRAY[30]) || ARRAY[2] "
                           "|| array_fill(0, ARRAY[30]), second = extract(epoch FROM now())::bigint")
    raw = await Raw.open(relay.port)
    await raw.auth(t.key)
    reply = await raw.cmd(f"MAIL FROM:<{t.sender}>")
    assert reply.startswith("421")
    assert 29 <= int(reply.split("retry in ")[1].split()[0]) <= 32
    raw.close()
