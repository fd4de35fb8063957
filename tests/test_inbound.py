"""The inbound listener end to end: real senders (smtplib, aiosmtplib, swaks), a real app (uvicorn on
port 0), the real database; SPEC.md's "Inbound mail to HTTP" table row by row."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import smtplib
import time
from pathlib import Path

import aiosmtplib
import pytest
import standardwebhooks

from relay.inbound.routes import Format
from tests.http_target import Target, closed_port, serve_target
from tests.inbound_helpers import Inbound, message, serve_inbound

DATA = Path(__file__).parent / "data" / "inbound"
SWAKS = shutil.which("swaks")
GENERIC_550 = "the receiving application refused the message"
UNAVAILABLE = "the receiving application is unavailable, try again later"


@pytest.fixture
async def app() -> Target:
    async with serve_target() as target:
        yield target  # type: ignore[misc]


@pytest.fixture
async def inbound(db_dsn, store, peer) -> Inbound:
    async with serve_inbound(db_dsn, store, peer, post_timeout_seconds=2.0) as live:
        yield live  # type: ignore[misc]


async def one(inbound: Inbound, app: Target, path: str, **route: object) -> tuple[int, bytes, str]:
    """Route *@inbound.test to path, send one message: (DATA code, text, the account's secret)."""
    account = await inbound.account()
    _route, secret = await inbound.route(account, "*@inbound.test", app.url(path), **route)  # type: ignore[arg-type]
    code, text, refused = await inbound.smtplib_send("alice@example.org", ["support@inbound.test"], message())
    assert refused == {}
    return code, text, secret


# --- SPEC.md's table, row by row -------------------------------------------------------------------

@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_2xx_is_250_and_the_post_is_signed(inbound: Inbound, app: Target, status: int) -> None:
    code, text, secret = await one(inbound, app, f"/status/{status}")
    assert (code, text) == (250, b"2.0.0 OK: delivered to the application")
    [got] = app.received
    doc = standardwebhooks.Webhook(secret).verify(got.body, got.headers)
    assert doc["envelope"]["recipients"] == ["support@inbound.test"]
    assert got.headers["content-type"] == "application/json"
    [row] = await inbound.logs(1)
    assert (row.http_status, row.outcome) == (status, "delivered")
    assert row.smtp_reply == "250 2.0.0 OK: delivered to the application"
    assert row.recipients == ("support@inbound.test",) and row.sender == "alice@example.org"
    assert row.webhook_id == got.headers["webhook-id"] and row.size_bytes > 0


@pytest.mark.parametrize("status", [400, 403, 404, 410, 422, 429])
async def test_4xx_text_plain_is_550_with_its_first_line(inbound: Inbound, app: Target, status: int) -> None:
    code, text, _ = await one(inbound, app, f"/status/{status}?text=Unknown+ticket+4711%0Asecond+line")
    assert (code, text) == (550, b"5.0.0 Unknown ticket 4711")
    [row] = await inbound.logs(1)
    assert (row.http_status, row.response_text, row.outcome) == (status, "Unknown ticket 4711", "refused")


async def test_4xx_text_plain_is_cleaned_and_bounded(inbound: Inbound, app: Target) -> None:
    long_line = "caf%C3%A9+" + "x" * 600
    code, text, _ = await one(inbound, app, f"/status/404?text={long_line}")
    assert code == 550 and text.startswith(b"5.0.0 caf? xxx") and len(text) == len("5.0.0 ") + 400


@pytest.mark.parametrize(("query", "why"), [
    ("text=%3Cp%3ENo%3C/p%3E&type=text/html", "an HTML body"),
    ("text=%7B%22error%22%3A%22no%22%7D&type=application/json", "a JSON body"),
    ("text=", "an empty text/plain body"),
])
async def test_4xx_other_bodies_get_the_generic_text(inbound: Inbound, app: Target, query: str, why: str) -> None:
    code, text, _ = await one(inbound, app, f"/status/404?{query}")
    assert (code, text.decode()) == (550, f"5.0.0 {GENERIC_550}"), why


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_451(inbound: Inbound, app: Target, status: int) -> None:
    code, text, _ = await one(inbound, app, f"/status/{status}")
    assert (code, text.decode()) == (451, f"4.3.0 {UNAVAILABLE}")
    [row] = await inbound.logs(1)
    assert (row.http_status, row.outcome) == (status, "deferred")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_three_redirects_are_followed(inbound: Inbound, app: Target, status: int) -> None:
    code, _, secret = await one(inbound, app, f"/redirect/3?code={status}&final=200")
    assert code == 250
    assert [r.path.split("?")[0] for r in app.received] == ["/redirect/3", "/redirect/2", "/redirect/1", "/redirect/0"]
    for hop in app.received:  # the same signed POST at every hop
        standardwebhooks.Webhook(secret).verify(hop.body, hop.headers)
    [row] = await inbound.logs(1)
    assert row.http_status == 200  # the final status


async def test_redirect_then_4xx_reports_the_final_answer(inbound: Inbound, app: Target) -> None:
    code, text, _ = await one(inbound, app, "/redirect/2?code=302&final=404")
    assert (code, text) == (550, b"5.0.0 arrived 404")


async def test_a_fourth_redirect_is_unreachable(inbound: Inbound, app: Target) -> None:
    code, text, _ = await one(inbound, app, "/redirect/4?code=307")
    assert (code, text.decode()) == (451, f"4.4.1 {UNAVAILABLE}")
    assert len(app.received) == 4
    [row] = await inbound.logs(1)
    assert (row.http_status, row.outcome) == (0, "deferred") and "too-many-redirects" in row.response_text


async def test_slow_app_past_the_timeout_is_451_in_time(inbound: Inbound, app: Target) -> None:
    started = time.monotonic()
    code, text, _ = await one(inbound, app, "/hang")
    assert (code, text.decode()) == (451, f"4.4.2 {UNAVAILABLE}")
    assert time.monotonic() - started < 2.0 + 2  # post_timeout_seconds, with slack for the SMTP exchange
    [row] = await inbound.logs(1)
    assert (row.http_status, row.outcome) == (0, "deferred") and row.response_text.startswith("timeout")


async def test_unreachable_app_is_451(inbound: Inbound) -> None:
    account = await inbound.account()
    await inbound.route(account, "*@inbound.test", f"http://127.0.0.1:{closed_port()}/hook")
    code, text, _ = await inbound.smtplib_send("a@example.org", ["x@inbound.test"], message())
    assert (code, text.decode()) == (451, f"4.4.1 {UNAVAILABLE}")
    [row] = await inbound.logs(1)
    assert (row.http_status, row.outcome) == (0, "deferred") and row.response_text.startswith("unreachable")


async def test_tls_failure_is_451(inbound: Inbound, tmp_path: Path) -> None:
    import trustme
    cert = trustme.CA().issue_cert("localhost")  # a CA nobody trusts
    cert.private_key_and_cert_chain_pem.write_to_path(tmp_path / "both.pem")
    async with serve_target(certfile=str(tmp_path / "both.pem"), keyfile=str(tmp_path / "both.pem")) as tls_app:
        account = await inbound.account()
        await inbound.route(account, "*@inbound.test", tls_app.url("/status/200", host="localhost"))
        code, _, _ = await inbound.smtplib_send("a@example.org", ["x@inbound.test"], message())
        assert code == 451 and tls_app.received == []
    [row] = await inbound.logs(1)
    assert row.http_status == 0 and row.response_text.startswith("tls")


@pytest.mark.parametrize("status", [300, 304, 305, 306])
async def test_any_other_status_is_451(inbound: Inbound, app: Target, status: int) -> None:
    code, _, _ = await one(inbound, app, f"/status/{status}")
    assert code == 451
    [row] = await inbound.logs(1)
    assert row.http_status == status


# --- RCPT TO, sizes, line ends, AUTH, limits ------------------------------------------------------

async def test_no_route_is_550_5_1_1_at_rcpt(inbound: Inbound, app: Target) -> None:
    account = await inbound.account()
    await inbound.route(account, "support@inbound.test", app.url("/status/200"))
    code, _, refused = await inbound.smtplib_send("a@example.org", ["nobody@inbound.test", "x@elsewhere.test"],
                                                  message())
    assert code == 0
    assert refused == {"nobody@inbound.test": (550, b"5.1.1 <nobody@inbound.test>: no such recipient here"),
                       "x@elsewhere.test": (550, b"5.1.1 <x@elsewhere.test>: no such recipient here")}
    assert app.received == []


async def test_oversize_declared_in_size_is_552_at_mail_from(db_dsn, store, peer, app: Target) -> None:
    async with serve_inbound(db_dsn, store, peer, max_message_bytes=1000) as inbound:
        account = await inbound.account()
        await inbound.route(account, "*@inbound.test", app.url("/status/200"))

        def run() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", inbound.port, timeout=10) as client:
                client.ehlo("x.test")
                assert client.has_extn("size") and client.esmtp_features["size"] == "1000"
                return client.mail("a@example.org", ["SIZE=5000"])
        assert await asyncio.to_thread(run) == (552, b"5.3.4 message size exceeds the fixed maximum message size")
        assert app.received == []

        def before_helo() -> tuple[int, bytes]:  # the session's order: HELO first, then the size
            with smtplib.SMTP("127.0.0.1", inbound.port, timeout=10) as client:
                return client.docmd("MAIL", "FROM:<a@example.org> SIZE=5000")
        assert (await asyncio.to_thread(before_helo))[0] == 503


async def test_oversize_data_is_552_with_the_routes_text_and_never_posted(db_dsn, store, peer, app: Target) -> None:
    async with serve_inbound(db_dsn, store, peer, max_message_bytes=1000) as inbound:
        account = await inbound.account()
        await inbound.route(account, "*@inbound.test", app.url("/status/200"),
                            oversize_text="Attachments over 1 KB: use https://upload.example")
        code, text, _ = await inbound.smtplib_send("a@example.org", ["x@inbound.test"], message(body="y" * 5000))
        assert (code, text) == (552, b"5.3.4 Attachments over 1 KB: use https://upload.example")
        other = await inbound.account()
        await inbound.route(other, "*@plain.test", app.url("/status/200"))
        code, text, _ = await inbound.smtplib_send("a@example.org", ["x@plain.test"], message(body="y" * 5000))
        assert (code, text) == (552, b"5.3.4 message too large for this recipient")
        assert app.received == []
        rows = await inbound.logs(2)
        assert {(r.outcome, r.http_status) for r in rows} == {("oversize", 0)}
        # the session goes on: a small message after the refused one arrives
        code, _, _ = await inbound.smtplib_send("a@example.org", ["x@plain.test"], message())
        assert code == 250 and len(app.received) == 1


async def test_bare_lf_is_refused_and_never_posted(inbound: Inbound, app: Target) -> None:
    account = await inbound.account()
    await inbound.route(account, "*@inbound.test", app.url("/status/200"))
    reader, writer = await asyncio.open_connection("127.0.0.1", inbound.port)
    try:
        await reader.readline()
        for command in (b"EHLO x.test", b"MAIL FROM:<a@example.org>", b"RCPT TO:<s@inbound.test>", b"DATA"):
            writer.write(command + b"\r\n")
            while True:
                line = await reader.readline()
                if line[3:4] == b" ":
                    break
        writer.write(b"Subject: x\r\n\r\nsmuggled\n.\r\nMAIL FROM:<evil@x>\r\n.\r\n")
        reply = await reader.readline()
        assert reply.startswith(b"550 5.6.11"), reply
    finally:
        writer.close()
    assert app.received == []


async def test_no_auth_here(inbound: Inbound) -> None:
    def run() -> tuple[bool, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", inbound.port, timeout=10) as client:
            client.ehlo("x.test")
            return client.has_extn("auth"), client.docmd("AUTH", "PLAIN AGZvbwBiYXI=")
    advertised, reply = await asyncio.to_thread(run)
    assert not advertised and reply == (502, b"5.5.1 AUTH is not available on this server")


async def test_too_many_recipients_is_452(db_dsn, store, peer, app: Target) -> None:
    async with serve_inbound(db_dsn, store, peer, max_recipients=2) as inbound:
        account = await inbound.account()
        await inbound.route(account, "*@inbound.test", app.url("/status/200"))
        code, _, refused = await inbound.smtplib_send("a@example.org", ["a@inbound.test", "b@inbound.test",
                                                                        "c@inbound.test"], message())
        assert code == 250 and refused == {"c@inbound.test": (452, b"4.5.3 Too many recipients")}
        assert json.loads(app.received[0].body)["envelope"]["recipients"] == ["a@inbound.test", "b@inbound.test"]


async def test_connection_limit_per_client_address(db_dsn, store, peer) -> None:
    async with serve_inbound(db_dsn, store, peer, max_connections_per_client=2) as inbound:
        held = [await asyncio.open_connection("127.0.0.1", inbound.port) for _ in range(2)]
        for reader, _ in held:
            assert (await reader.readline()).startswith(b"220 ")
        reader, writer = await asyncio.open_connection("127.0.0.1", inbound.port)
        refused = await reader.readline()
        assert refused.startswith(b"421 4.7.0 ") and b"Too many connections" in refused
        assert await reader.read() == b""  # and closed
        writer.close()
        held[0][1].close()
        # a slot is free again once a connection ends

        async def greeting() -> bytes:
            r, w = await asyncio.open_connection("127.0.0.1", inbound.port)
            try:
                return await r.readline()
            finally:
                w.close()
        deadline = time.monotonic() + 5
        while not (await greeting()).startswith(b"220 "):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        for _, w in held[1:]:
            w.close()


async def test_idle_client_is_disconnected(db_dsn, store, peer) -> None:
    async with serve_inbound(db_dsn, store, peer, idle_timeout_seconds=1.0, post_timeout_seconds=0.5) as inbound:
        reader, writer = await asyncio.open_connection("127.0.0.1", inbound.port)
        assert (await reader.readline()).startswith(b"220 ")
        started = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), 10)
        assert rest.startswith(b"421 4.4.2 ") and time.monotonic() - started < 5  # told, then closed
        writer.close()


async def test_private_targets_refused_at_delivery_unless_allowed(db_dsn, store, peer, app: Target) -> None:
    async with serve_inbound(db_dsn, store, peer, allow_private_targets=False) as inbound:
        account = await inbound.account()
        await inbound.route(account, "*@inbound.test", app.url("/status/200"))  # stored past the creation check
        code, _, _ = await inbound.smtplib_send("a@example.org", ["x@inbound.test"], message())
        assert code == 451 and app.received == []
        [row] = await inbound.logs(1)
        assert row.response_text.startswith("refused-by-ssrf") and "loopback" in row.response_text


# --- several recipients, several routes -------------------------------------------------------------

@pytest.mark.parametrize(("first", "second", "reply"), [
    (200, 200, 250), (200, 404, 550), (404, 200, 550), (200, 503, 451), (404, 503, 451), (503, 404, 451),
])
async def test_one_post_per_route_and_the_worst_answer(inbound: Inbound, app: Target, first: int, second: int,
                                                       reply: int) -> None:
    a, b = await inbound.account(), await inbound.account()
    await inbound.route(a, "*@one.test", app.url(f"/status/{first}"))
    await inbound.route(b, "/(sales|info)@two\\.test/", app.url(f"/status/{second}"))
    code, _, _ = await inbound.smtplib_send("x@example.org", ["p@one.test", "sales@two.test", "q@one.test",
                                                              "info@two.test"], message())
    assert code == reply
    assert len(app.received) == 2
    envelopes = sorted(json.loads(r.body)["envelope"]["recipients"] for r in app.received)
    assert envelopes == [["p@one.test", "q@one.test"], ["sales@two.test", "info@two.test"]]
    rows = await inbound.logs(2)
    assert sorted(r.http_status for r in rows) == sorted([first, second])


@pytest.mark.parametrize("format_", [Format.JSON, Format.RAW])
async def test_a_message_sent_again_keeps_its_webhook_id(inbound: Inbound, app: Target, format_: Format) -> None:
    # docs/inbound.md: a sending server retrying after a 451 delivers the same webhook-id again, although
    # relay's own Received: line (queue id, time) differs on every attempt
    account = await inbound.account()
    await inbound.route(account, "*@inbound.test", app.url("/status/503"), format=format_)
    original = message()
    for _ in range(2):
        code, _, _ = await inbound.smtplib_send("alice@example.org", ["support@inbound.test"], original)
        assert code == 451
    first, second = app.received
    assert first.body != second.body  # the Received: lines differ
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    code, _, _ = await inbound.smtplib_send("alice@example.org", ["support@inbound.test"], message())
    assert app.received[2].headers["webhook-id"] != first.headers["webhook-id"]  # another message, another id


async def test_priority_picks_the_route(inbound: Inbound, app: Target) -> None:
    account = await inbound.account()
    await inbound.route(account, "*@inbound.test", app.url("/status/200?text=wide"), priority=10)
    await inbound.route(account, "vip@inbound.test", app.url("/status/201?text=narrow"), priority=1)
    await inbound.smtplib_send("x@example.org", ["vip@inbound.test"], message())
    await inbound.smtplib_send("x@example.org", ["other@inbound.test"], message())
    assert [r.path for r in app.received] == ["/status/201?text=narrow", "/status/200?text=wide"]


# --- formats and real-world messages ------------------------------------------------------------------

async def test_raw_format(inbound: Inbound, app: Target) -> None:
    account = await inbound.account()
    _, secret = await inbound.route(account, "*@inbound.test", app.url("/status/200"), format=Format.RAW)
    original = (DATA / "latin1_8bit.eml").read_bytes()
    code, _, _ = await inbound.smtplib_send("rene@example.de", ["info@inbound.test"], original)
    assert code == 250
    [got] = app.received
    assert got.headers["content-type"] == "message/rfc822"
    assert got.headers["x-relay-envelope-from"] == "rene@example.de"
    assert got.headers["x-relay-envelope-to"] == "info@inbound.test"
    assert got.headers["x-relay-remote-ip"] == "127.0.0.1" and got.headers["x-relay-tls"] == "false"
    assert got.body.startswith(b"Received: from ")
    assert got.body.split(b"\r\n", 1)[1] == original  # byte for byte after our trace line
    # the signature covers the bytes (the reference verifier decodes the body as UTF-8: latin-1 is not)
    from relay.outbound import signing
    expected = signing.signature(secret, got.headers["webhook-id"], int(got.headers["webhook-timestamp"]), got.body)
    assert got.headers["webhook-signature"] == expected


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.eml")))
async def test_real_world_messages_arrive_as_json(inbound: Inbound, app: Target, name: str) -> None:
    account = await inbound.account()
    _, secret = await inbound.route(account, "*@inbound.test", app.url("/status/200"))
    code, _, _ = await inbound.smtplib_send("sender@example.org", ["app@inbound.test"], (DATA / name).read_bytes())
    assert code == 250
    [got] = app.received
    doc = standardwebhooks.Webhook(secret).verify(got.body, got.headers)
    assert set(doc) == {"envelope", "headers", "plain", "html", "reply_plain", "attachments"}
    received = doc["headers"]["received"]
    ours = received if isinstance(received, str) else received[0]  # ours is on top of the sender's
    assert ours.startswith("from sender.test ([127.0.0.1]) by relay.test with ESMTP id ")
    assert doc["plain"] or doc["html"]


async def test_attachments_survive_the_trip(inbound: Inbound, app: Target) -> None:
    account = await inbound.account()
    await inbound.route(account, "*@inbound.test", app.url("/status/200"))
    code, _, _ = await inbound.smtplib_send("bob@corp.example", ["receipts@inbound.test"],
                                            (DATA / "outlook_attachments.eml").read_bytes())
    assert code == 250
    doc = json.loads(app.received[0].body)
    assert [a["file_name"] for a in doc["attachments"]] == ["image001.png", "receipt.pdf", "forwarded.eml"]
    assert base64.b64decode(doc["attachments"][1]["content"]).startswith(b"%PDF")
    assert doc["reply_plain"] == "Please find the receipt attached.\n\nRegards,\nBob"


# --- other senders ------------------------------------------------------------------------------------

async def test_aiosmtplib_with_starttls(db_dsn, store, peer, app: Target, tmp_path: Path) -> None:
    import ssl

    import trustme
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(tmp_path / "both.pem")
    async with serve_inbound(db_dsn, store, peer, tls_cert=str(tmp_path / "both.pem"),
                             tls_key=str(tmp_path / "both.pem")) as inbound:
        account = await inbound.account()
        _, secret = await inbound.route(account, "*@inbound.test", app.url("/status/200"))
        context = ssl.create_default_context()
        ca.configure_trust(context)
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=inbound.port, tls_context=context, start_tls=True)
        async with client:
            errors, reply = await client.sendmail("a@example.org", ["t@inbound.test"], message().encode())
        assert errors == {} and reply.startswith("2.0.0 OK")
        doc = standardwebhooks.Webhook(secret).verify(app.received[0].body, app.received[0].headers)
        assert doc["envelope"]["tls"] is True
        assert " with ESMTPS id " in doc["headers"]["received"]


async def test_aiosmtplib_sees_the_550_text(inbound: Inbound, app: Target) -> None:
    account = await inbound.account()
    await inbound.route(account, "*@inbound.test", app.url("/status/404?text=No+such+ticket"))
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=inbound.port) as client:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.sendmail("a@example.org", ["t@inbound.test"], message().encode())
    assert refused.value.code == 550 and refused.value.message == "5.0.0 No such ticket"


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (apt-get install swaks)")
async def test_swaks(inbound: Inbound, app: Target) -> None:
    account = await inbound.account()
    _, secret = await inbound.route(account, "*@inbound.test", app.url("/status/200"))
    assert SWAKS is not None
    proc = await asyncio.create_subprocess_exec(
        SWAKS, "--server", f"127.0.0.1:{inbound.port}", "--timeout", "10", "--from", "alice@example.org",
        "--to", "help@inbound.test", "--header", "Subject: printer on fire", "--body", "Please help.",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    assert "<-  250 2.0.0 OK: delivered to the application" in out.decode()
    doc = standardwebhooks.Webhook(secret).verify(app.received[0].body, app.received[0].headers)
    assert doc["headers"]["subject"] == "printer on fire" and doc["plain"].strip() == "Please help."


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (apt-get install swaks)")
async def test_swaks_sees_451_for_a_dead_app(inbound: Inbound) -> None:
    account = await inbound.account()
    await inbound.route(account, "*@inbound.test", f"http://127.0.0.1:{closed_port()}/")
    assert SWAKS is not None
    proc = await asyncio.create_subprocess_exec(
        SWAKS, "--server", f"127.0.0.1:{inbound.port}", "--timeout", "10", "--from", "a@example.org",
        "--to", "help@inbound.test", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert f"<** 451 4.4.1 {UNAVAILABLE}" in out.decode(), out.decode()


# --- failures around the POST -------------------------------------------------------------------------

async def test_sender_hanging_up_during_the_post_still_logs_the_delivery(inbound: Inbound, app: Target) -> None:
    account = await inbound.account()
    await inbound.route(account, "*@inbound.test", app.url("/sleep?s=0.5"))
    reader, writer = await asyncio.open_connection("127.0.0.1", inbound.port)
    await reader.readline()
    for command in (b"EHLO x.test", b"MAIL FROM:<a@example.org>", b"RCPT TO:<s@inbound.test>", b"DATA"):
        writer.write(command + b"\r\n")
        while (await reader.readline())[3:4] != b" ":
            pass
    writer.write(message().encode() + b".\r\n")
    await writer.drain()
    await app.wait_for(1)  # the POST is under way: hang up
    writer.close()
    [row] = await inbound.logs(1)  # the app's answer is still recorded
    assert (row.http_status, row.outcome) == (200, "delivered")


async def test_routes_unreadable_is_451_at_rcpt(db_dsn, store, peer, pg, app: Target) -> None:
    from tests.conftest import database_unreachable
    async with serve_inbound(db_dsn, store, peer, route_cache_seconds=0.0) as inbound:
        account = await inbound.account()
        await inbound.route(account, "*@inbound.test", app.url("/status/200"))
        async with database_unreachable(inbound.live, pg.admin_dsn):
            code, _, refused = await inbound.smtplib_send("a@example.org", ["x@inbound.test"], message())
        assert refused == {"x@inbound.test": (451, b"4.3.0 temporary failure, try again later")}
        assert app.received == []
        code, _, _ = await inbound.smtplib_send("a@example.org", ["x@inbound.test"], message())
        assert code == 250  # and it works again once the database is back


async def test_shutdown_lets_a_post_in_progress_finish(db_dsn, store, peer, app: Target) -> None:
    from tests.conftest import relay_config, start_relay
    live = await start_relay(relay_config(db_dsn, peer.url, inbound={
        "listen": "127.0.0.1:0", "allow_private_targets": True, "post_timeout_seconds": 5.0}), store, peer)
    inbound = Inbound(live)
    account = await inbound.account()
    await inbound.route(account, "*@inbound.test", app.url("/sleep?s=1"))
    sending = asyncio.ensure_future(inbound.smtplib_send("a@example.org", ["x@inbound.test"], message()))
    await app.wait_for(1)
    await live.server.stop(grace=5)  # stops accepting; the DATA in progress finishes within the grace
    code, _, _ = await sending
    assert code == 250
    [row] = await inbound.logs(1)
    assert row.outcome == "delivered"


async def test_metrics_by_outcome(inbound: Inbound, app: Target) -> None:
    import httpx
    account = await inbound.account()
    await inbound.route(account, "ok@inbound.test", app.url("/status/200"))
    await inbound.route(account, "no@inbound.test", app.url("/status/404"))

    async def counts() -> dict[str, float]:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{inbound.live.server.port('http')}/metrics")).text
        found = {}
        for line in text.splitlines():
            if line.startswith("relay_inbound_total{"):
                label, value = line.split("} ")
                found[label.split('"')[1]] = float(value)
            elif line.startswith('relay_inbound_rcpt_refused_total{reason="no-route"}'):
                found["no-route"] = float(line.split()[-1])
        return found

    before = await counts()
    await inbound.smtplib_send("a@example.org", ["ok@inbound.test"], message())
    await inbound.smtplib_send("a@example.org", ["no@inbound.test"], message())
    await inbound.smtplib_send("a@example.org", ["nobody@inbound.test"], message())
    after = await counts()
    for outcome in ("delivered", "refused", "no-route"):
        assert after.get(outcome, 0) - before.get(outcome, 0) == 1, (outcome, before, after)


async def test_command_limit_per_connection(db_dsn, store, peer) -> None:
    async with serve_inbound(db_dsn, store, peer, max_commands=3) as inbound:
        reader, writer = await asyncio.open_connection("127.0.0.1", inbound.port)
        assert (await reader.readline()).startswith(b"220 ")
        replies = []
        for _ in range(4):
            writer.write(b"NOOP\r\n")
            replies.append(await reader.readline())
        assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"421"]
        assert replies[-1] == b"421 4.7.0 NOOP sent too many times\r\n"
        assert await reader.read() == b""  # closed
        writer.close()


@pytest.mark.parametrize("format_", [Format.JSON, Format.RAW])
async def test_internationalized_recipient(inbound: Inbound, app: Target, format_: Format) -> None:
    account = await inbound.account()
    await inbound.route(account, "*@inbound.test", app.url("/status/200"), format=format_)

    def run() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", inbound.port, timeout=10) as client:
            client.ehlo("x.test")
            assert client.has_extn("smtputf8")
            return client.sendmail("rené@example.org", ["josé@inbound.test"],
                                   "Subject: olá\r\n\r\nbody\r\n".encode(), mail_options=["SMTPUTF8"]) or (250, b"")
    await asyncio.to_thread(run)
    [got] = app.received
    if format_ is Format.JSON:
        doc = json.loads(got.body)
        assert doc["envelope"]["recipients"] == ["josé@inbound.test"] and doc["envelope"]["from"] == "rené@example.org"
    else:
        from urllib.parse import unquote
        assert got.headers["x-relay-envelope-to"] == "jos%C3%A9@inbound.test"
        assert unquote(got.headers["x-relay-envelope-from"]) == "rené@example.org"
