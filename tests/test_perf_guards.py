"""Guards for the speed-ups: they must not change what the client sees, nor what the rate limit allows."""

from __future__ import annotations

from relay.channels.smtp import RelaySMTP
from tests.smtp_helpers import Raw, message, send


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


async def test_only_the_rate_limit_call_commits_asynchronously(relay) -> None:
    from relay.store.send import OPEN_CALL_SQL

    t = await relay.tenant(credits=100)
    async with relay.store.pool.acquire() as conn:
        await conn.execute("SET synchronous_commit = on")  # the test server itself runs with it off
        async with conn.transaction():
            row = await conn.fetchrow(OPEN_CALL_SQL, t.key_id, 60, 1, None, 0)  # a call, no lease
            assert row["enabled"] is True and row["credits"] == 100
            assert await conn.fetchval("SELECT current_setting('synchronous_commit')") == "off"
        # set_config(..., true) ends with the transaction: the connection's next user commits durably
        assert await conn.fetchval("SELECT current_setting('synchronous_commit')") == "on"
        await conn.execute("RESET synchronous_commit")
    # and the call counted: a real row in the rate window
    counts = await relay.store.pool.fetchval("SELECT counts FROM rate_windows WHERE key_id = $1", t.key_id)
    assert sum(counts) == 1


async def test_ehlo_reply_is_one_write_with_every_line(relay, monkeypatch) -> None:
    writes: list[bytes] = []
    flush = RelaySMTP.flush

    def counted(self: RelaySMTP) -> None:
        if self._out and self.transport is not None:
            writes.append(b"".join(self._out))  # what this flush hands to the transport in one write
        flush(self)

    monkeypatch.setattr(RelaySMTP, "flush", counted)
    raw = await Raw.open(relay.port)
    reply = await raw.cmd("EHLO client.test")
    raw.close()
    assert len(writes) == 2  # the greeting, then the whole EHLO reply at once
    assert writes[1].decode() == reply
    lines = reply.split("\r\n")
    assert lines[-1] == "" and lines[-2] == "250 HELP"
    assert lines[:-2] == ["250-relay.test", "250-SIZE 10485760", "250-8BITMIME", "250-SMTPUTF8",
                          "250-AUTH LOGIN PLAIN", "250-PIPELINING"]


_FRAGMENT = """
import sys
from relay import malloc
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
if sys.argv[1] == "tuned":
    assert malloc.tune()
base, survivors = rss_mb(), []
for _ in range(3):  # DATA buffers as _read_data grows them, with small objects left between
    buffers = []
    for _ in range(20):
        buffer, chunk = bytearray(b"--"), b"x" * (256 << 10)
        while len(buffer) < 9_500_000:
            buffer += chunk
        buffers.append(buffer)
        survivors.append(bytes(100))
    del buffers
print(rss_mb() - base)
"""


def test_freed_message_buffers_go_back_to_the_os() -> None:
    import subprocess
    import sys

    def retained_mb(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _FRAGMENT, mode], capture_output=True, text=True,
                             check=True, timeout=60)
        return int(out.stdout)

    assert retained_mb("default") > 100  # glibc's own behaviour: the case this guards against
    assert retained_mb("tuned") < 40
