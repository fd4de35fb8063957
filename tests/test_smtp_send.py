"""SMTP relay, accepted paths: SENT and QUEUED replies, the exact envelope, hygiene, partial refusals."""

from __future__ import annotations

import asyncio
import smtplib
import uuid
from email.message import EmailMessage

import aiosmtplib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.channels.smtp_data import read_data
from tests.smtp_helpers import Raw, login, message, send


async def test_sent_reply_envelope_and_charge(relay) -> None:
    t = await relay.tenant(credits=10)
    data = message(t.sender, extra_headers="Bcc: hidden@dest.test\r\nCc: c@dest.test\r\n")
    reply = await send(relay.port, t.key, t.sender, ["to@dest.test", "c@dest.test", "hidden@dest.test"], data)
    assert reply.code == 250
    assert reply.message.startswith("OK: ")
    message_id = reply.message.removeprefix("OK: ")
    assert len(relay.peer.messages) == 1
    got = relay.peer.messages[0]
    assert got.mail_from == t.sender
    assert got.recipients == ["to@dest.test", "c@dest.test", "hidden@dest.test"]  # Bcc kept in envelope
    assert b"hidden@dest.test" not in got.data  # ...and removed from the headers
    assert got.data.startswith(b"Received: from ")
    assert b"\r\nMessage-ID: <" in got.data and b"\r\nDate: " in got.data
    assert await relay.balance(t) == 7
    row = await relay.store.message(uuid.UUID(message_id))
    assert row["status"] == "sent" and row["channel"] == "smtp"
    assert row["credits_charged"] == 3 and row["credits_refunded"] == 0
    assert row["recipient_count"] == 3 and row["key_id"] == t.key_id


async def test_existing_message_id_and_date_are_kept(relay) -> None:
    t = await relay.tenant()
    headers = "Message-ID: <mine@app.test>\r\nDate: Mon, 23 Nov 2026 00:00:00 +0000\r\n"
    await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender, extra_headers=headers))
    data = relay.peer.messages[0].data
    assert data.count(b"Message-ID:") == 1 and b"<mine@app.test>" in data
    assert data.count(b"\r\nDate:") == 1


async def test_dot_stuffed_lines_survive_the_round_trip(relay) -> None:
    t = await relay.tenant()
    body = ".starts with a dot\r\n..two dots\r\n.\r\nnot the end\r\n"
    await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender, body=body))
    assert relay.peer.messages[0].data.endswith(body.encode())


async def test_queued_over_daily_cap(relay) -> None:
    t = await relay.tenant(credits=10, daily_cap=1)
    first = await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
    second = await send(relay.port, t.key, t.sender, ["a@dest.test", "b@dest.test"], message(t.sender))
    assert first.message.startswith("OK: ")
    assert second.code == 250 and second.message.startswith("queued: ")
    assert len(relay.peer.messages) == 1  # the queued one is not relayed now
    assert await relay.balance(t) == 7  # queued messages are charged
    queued = await relay.store.queued()
    assert [str(r["id"]) for r in queued] == [second.message.removeprefix("queued: ")]
    assert queued[0]["deliver_after"] is not None
    async with relay.store.pool.acquire() as conn:
        body = await conn.fetchrow("SELECT mail_from, recipients, data FROM queued_bodies")
    assert body["mail_from"] == t.sender and body["recipients"] == ["a@dest.test", "b@dest.test"]
    assert b"\r\nSubject: test\r\n" in body["data"]


async def test_domain_sender_covers_any_address_and_cap_counts_per_address(relay) -> None:
    t = await relay.tenant(credits=10, sender="example.org", daily_cap=1)
    a = await send(relay.port, t.key, "one@example.org", ["x@dest.test"], message("one@example.org"))
    b = await send(relay.port, t.key, "two@example.org", ["x@dest.test"], message("two@example.org"))
    c = await send(relay.port, t.key, "one@example.org", ["x@dest.test"], message("one@example.org"))
    assert a.message.startswith("OK: ") and b.message.startswith("OK: ")
    assert c.message.startswith("queued: ")


async def test_partial_recipient_refusal_charges_only_accepted(relay) -> None:
    t = await relay.tenant(credits=10)
    relay.peer.handler.rcpt_replies["gone@dest.test"] = "550 5.1.1 <gone@dest.test>: User unknown"
    reply = await send(relay.port, t.key, t.sender, ["ok@dest.test", "gone@dest.test"], message(t.sender))
    assert reply.code == 250
    assert relay.peer.messages[0].recipients == ["ok@dest.test"]
    assert await relay.balance(t) == 9
    row = await relay.store.message(uuid.UUID(reply.message.removeprefix("OK: ")))
    assert row["status"] == "sent" and row["credits_charged"] == 2 and row["credits_refunded"] == 1
    assert "gone@dest.test (550)" in row["upstream_reply"]


async def test_duplicate_rcpt_is_charged_once(relay) -> None:
    t = await relay.tenant(credits=10)
    await send(relay.port, t.key, t.sender, ["a@dest.test", "A@dest.test"], message(t.sender))
    assert relay.peer.messages[0].recipients == ["a@dest.test"]
    assert await relay.balance(t) == 9


async def test_several_transactions_on_one_connection(relay) -> None:
    t = await relay.tenant(credits=10)
    client = await login(relay.port, t.key)
    for i in range(3):
        await client.sendmail(t.sender, [f"r{i}@dest.test"], message(t.sender))
    await client.quit()
    assert [m.recipients for m in relay.peer.messages] == [["r0@dest.test"], ["r1@dest.test"], ["r2@dest.test"]]
    assert await relay.balance(t) == 7


async def test_pipelined_commands_after_data_are_not_lost(relay) -> None:
    """Bytes after the end-of-data marker in the same packet are the next commands."""
    t = await relay.tenant(credits=10)
    raw = await Raw.open(relay.port)
    assert (await raw.auth(t.key)).startswith("235")
    await raw.cmd(f"MAIL FROM:<{t.sender}>")
    await raw.cmd("RCPT TO:<a@dest.test>")
    assert (await raw.cmd("DATA")).startswith("354")
    raw.writer.write(message(t.sender) + b".\r\nNOOP\r\n")
    assert (await raw.reply()).startswith("250 OK: ")
    assert (await raw.reply()).startswith("250")  # the NOOP's reply
    raw.close()


async def test_smtplib_plain_and_login(relay) -> None:
    t = await relay.tenant(credits=10)

    def with_smtplib(mechanism: str) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = t.sender, "a@dest.test", "smtplib"
        msg.set_content("hi")
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=10) as client:
            client.ehlo()
            client.user, client.password = "app", t.key
            client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
            client.send_message(msg)

    await asyncio.to_thread(with_smtplib, "PLAIN")
    await asyncio.to_thread(with_smtplib, "LOGIN")
    assert len(relay.peer.messages) == 2
    assert await relay.balance(t) == 8


async def test_aiosmtplib_send_message(relay) -> None:
    t = await relay.tenant(credits=10)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = t.sender, "a@dest.test", "aiosmtplib"
    msg.set_content("hi")
    errors, reply = await aiosmtplib.send(msg, hostname="127.0.0.1", port=relay.port, username="x",
                                          password=t.key, start_tls=False, use_tls=False)
    assert errors == {} and reply.startswith("OK: ")


async def test_pipelined_client_gets_every_reply_in_order(relay) -> None:
    """RFC 2920: PIPELINING is advertised; a whole transaction sent in two writes works."""
    t = await relay.tenant(credits=10)
    raw = await Raw.open(relay.port)
    ehlo = await raw.cmd("EHLO client.test")
    assert "250-PIPELINING" in ehlo and ehlo.rstrip().endswith("250 HELP")
    import base64
    token = base64.b64encode(b"\0app\0" + t.key.encode()).decode()
    raw.writer.write(f"AUTH PLAIN {token}\r\nMAIL FROM:<{t.sender}>\r\nRCPT TO:<a@dest.test>\r\n"
                     f"RCPT TO:<bad>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n".encode())
    replies = [await raw.reply() for _ in range(6)]
    assert [r[:3] for r in replies] == ["235", "250", "250", "550", "250", "354"]
    raw.writer.write(message(t.sender) + b".\r\nQUIT\r\n")
    assert (await raw.reply()).startswith("250 OK: ")
    assert (await raw.reply()).startswith("221")
    raw.close()
    assert relay.peer.messages[0].recipients == ["a@dest.test", "b@dest.test"]
    assert b"from client.test (" in relay.peer.messages[0].data  # the EHLO name is still recorded
    assert await relay.balance(t) == 8


async def test_size_is_declared_to_an_upstream_that_advertises_it(db_dsn, store) -> None:
    from tests.conftest import relay_config, start_relay
    from tests.peer import Peer

    sized = await Peer(size_limit=50_000_000).start()
    live = await start_relay(relay_config(db_dsn, sized.url), store, sized)
    try:
        t = await live.tenant()
        await send(live.port, t.key, t.sender, ["a@dest.test"], message(t.sender, body="x\r\n" * 1000))
        [received] = sized.messages
        assert sized.handler.mail_options == [[f"SIZE={len(received.data)}"]]
    finally:
        await live.server.stop(grace=1)
        await sized.stop()


async def test_client_hanging_up_during_relay_leaves_no_charge_in_between(relay) -> None:
    """The client goes away while relay waits for the upstream: the send still runs to its recorded end."""
    t = await relay.tenant(credits=10)
    relay.peer.handler.data_delay = 0.5
    raw = await Raw.open(relay.port)
    await raw.begin_data(t.key, t.sender)
    raw.writer.write(message(t.sender) + b".\r\n")
    await raw.writer.drain()
    await asyncio.wait_for(relay.peer.handler.mail_seen.wait(), 10)  # admitted and with the upstream now
    raw.writer.transport.abort()
    for _ in range(50):
        rows = await relay.store.logs()
        if rows and rows[0]["status"] != "sending":
            break
        await asyncio.sleep(0.05)
    [row] = await relay.store.logs()
    assert row["status"] == "sent" and row["credits_refunded"] == 0  # finalized, not left for the sweep
    assert len(relay.peer.messages) == 1 and await relay.balance(t) == 9


@pytest.mark.parametrize("dots", [True, False])
async def test_data_arriving_a_byte_at_a_time_ends_and_unstuffs_exactly(relay, dots: bool) -> None:
    """Every chunk boundary falls somewhere in an end marker or a dot-stuffed line once."""
    t = await relay.tenant()
    raw = await Raw.open(relay.port)
    await raw.begin_data(t.key, t.sender)
    lines = ["..a", "b", "..", ".\t", "c."] if dots else ["a", "b.", "c"]
    wire = (f"From: {t.sender}\r\nSubject: s\r\n\r\n" + "".join(f"{x}\r\n" for x in lines)).encode()
    for i in range(len(wire)):
        raw.writer.write(wire[i:i + 1])
        await raw.writer.drain()
        await asyncio.sleep(0.001)  # the relay reads each byte on its own, mostly
    for byte in b".\r\nNOOP\r\n":
        raw.writer.write(bytes([byte]))
        await asyncio.sleep(0.001)
    assert (await raw.reply()).startswith("250 OK: ")
    assert (await raw.reply()).startswith("250")  # the NOOP after the end marker is still a command
    raw.close()
    [received] = relay.peer.messages
    unstuffed = [x[1:] if x.startswith(".") else x for x in lines]
    assert received.data.endswith(b"\r\n\r\n" + "".join(f"{x}\r\n" for x in unstuffed).encode())


class _Chunks:
    """A stream that hands out the given pieces, one per read, and keeps what is given back
    (the DATA reader's whole view of the connection: read and unread)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.given_back = bytearray()

    async def read(self, n: int, deadline: float | None = None) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""

    def unread(self, data: bytes | bytearray) -> None:
        self.given_back[0:0] = data


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"", b".", b"..", b".a", b"a.", b"x", b"xyz", b"\r", b"..\r"]), max_size=12),
       st.lists(st.integers(1, 6), max_size=30))
async def test_data_reader_ends_and_unstuffs_exactly_however_the_bytes_are_cut(lines: list[bytes],
                                                                               cuts: list[int]) -> None:
    """The DATA reader against the plain definition, for any split of the wire into reads."""
    lines = [x for x in lines if x != b"."]  # a line of one dot is the end marker, not content
    wire = b"".join((b"." + x if x.startswith(b".") else x) + b"\r\n" for x in lines) + b".\r\nNOOP\r\n"
    pieces, at = [], 0
    for cut in cuts:
        pieces.append(wire[at:at + cut])
        at += cut
    pieces.append(wire[at:])
    reader = _Chunks([p for p in pieces if p])
    data, _, dotted = await read_data(reader, limit=10_000_000, deadline=asyncio.get_running_loop().time() + 60)
    assert bytes(data) == b"\r\n" + b"".join(x + b"\r\n" for x in lines)
    assert dotted == any(x.startswith(b".") for x in lines)
    # what came after the end marker is left for the command reader, not a byte more or less
    assert bytes(reader.given_back) + b"".join(reader.pieces) == b"NOOP\r\n"
