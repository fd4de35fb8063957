"""SMTP security: TLS (STARTTLS, implicit, upstream), AUTH rules and throttling, smuggling, limits."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiosmtplib
import pytest
import trustme

from tests.conftest import relay_config, start_relay
from tests.peer import Peer
from tests.smtp_helpers import Raw, login, message, send


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert = ca.issue_cert("127.0.0.1", "localhost", "relay.test")
    cert_path, key_path, ca_path = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    return {"cert": str(cert_path), "key": str(key_path), "ca": str(ca_path)}


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_no_auth_without_tls_unless_allowed(db_dsn, store, peer) -> None:
    live = await start_relay(relay_config(db_dsn, peer.url, smtp={"allow_plaintext_auth": False}), store, peer)
    try:
        t = await live.tenant()
        raw = await Raw.open(live.port)
        ehlo = await raw.cmd("EHLO client.test")
        assert "AUTH" not in ehlo
        assert (await raw.auth(t.key)).startswith("538")
        assert (await raw.cmd(f"MAIL FROM:<{t.sender}>")).startswith("530")
        raw.close()
    finally:
        await live.server.stop(grace=1)


async def test_starttls_then_auth(db_dsn, store, peer, certs, ca) -> None:
    cfg = relay_config(db_dsn, peer.url, smtp={"allow_plaintext_auth": False, "tls_cert": certs["cert"],
                                                "tls_key": certs["key"]})
    live = await start_relay(cfg, store, peer)
    try:
        t = await live.tenant()
        raw = await Raw.open(live.port)
        ehlo = await raw.cmd("EHLO client.test")
        assert "STARTTLS" in ehlo and "AUTH" not in ehlo
        assert (await raw.auth(t.key)).startswith("538")
        raw.close()
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=live.port, start_tls=True,
                                 tls_context=client_context(ca))
        await client.connect()
        await client.login("app", t.key)
        _, reply = await client.sendmail(t.sender, ["a@dest.test"], message(t.sender))
        await client.quit()
        assert reply.startswith("OK: ")
        assert b"with ESMTPSA" in live.peer.messages[0].data
    finally:
        await live.server.stop(grace=1)


async def test_implicit_tls_listener(db_dsn, store, peer, certs, ca) -> None:
    cfg = relay_config(db_dsn, peer.url, smtp={
        "allow_plaintext_auth": False, "tls_cert": certs["cert"], "tls_key": certs["key"],
        "implicit_tls_listen": "127.0.0.1:0"})
    live = await start_relay(cfg, store, peer)
    try:
        t = await live.tenant()
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=live.server.port("smtps"), use_tls=True,
                                 tls_context=client_context(ca))
        await client.connect()
        await client.login("app", t.key)
        _, reply = await client.sendmail(t.sender, ["a@dest.test"], message(t.sender))
        await client.quit()
        assert reply.startswith("OK: ")
        assert await live.balance(t) == 99
    finally:
        await live.server.stop(grace=1)


async def test_upstream_starttls_is_used_and_required(db_dsn, store, certs, ca) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certs["cert"], certs["key"])
    tls_peer = await Peer(tls=server_context, require_starttls=True).start()
    plain_peer = await Peer().start()
    try:
        for upstream, expect_sent in ((tls_peer, True), (plain_peer, False)):
            url = f"smtp+starttls://127.0.0.1:{upstream.port}"
            cfg = relay_config(db_dsn, url, upstream={"tls_ca_file": certs["ca"]})
            live = await start_relay(cfg, store, upstream)
            try:
                t = await live.tenant(credits=10)
                if expect_sent:
                    reply = await send(live.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
                    assert reply.code == 250 and len(tls_peer.messages) == 1
                    assert await live.balance(t) == 9
                else:
                    # the peer offers no STARTTLS: refuse to fall back to plaintext
                    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
                        await send(live.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
                    assert caught.value.code == 451
                    assert plain_peer.messages == [] and await live.balance(t) == 10
            finally:
                await live.server.stop(grace=1)
    finally:
        await tls_peer.stop()
        await plain_peer.stop()


async def test_upstream_connections_are_reused(relay) -> None:
    t = await relay.tenant(credits=10)
    for _ in range(3):
        await send(relay.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
    assert len(relay.peer.messages) == 3
    assert relay.peer.handler.connections == 1


async def test_failed_auth_is_slowed_then_refused(db_dsn, store, peer) -> None:
    cfg = relay_config(db_dsn, peer.url, smtp={"auth_failures_before_delay": 2,
                                                "auth_failures_before_refusal": 3})
    live = await start_relay(cfg, store, peer)
    try:
        t = await live.tenant()
        loop = asyncio.get_running_loop()
        timings = []
        for _ in range(3):
            raw = await Raw.open(live.port)
            started = loop.time()
            assert (await raw.auth("rk_000000000000_wrong")).startswith("535")
            timings.append(loop.time() - started)
            raw.close()
        assert timings[0] < 0.5 and timings[2] >= 0.9  # the third attempt waited
        raw = await Raw.open(live.port)
        reply = await raw.auth(t.key)  # even the right key: this address is refused for now
        assert reply.startswith("421 4.7.0")
        assert await raw.closed()
    finally:
        await live.server.stop(grace=1)


SMUGGLING = [
    b"\n.\n",  # bare LF dot bare LF
    b"\r\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r\n.\r",
]


@pytest.mark.parametrize("marker", SMUGGLING, ids=[m.hex() for m in SMUGGLING])
async def test_smuggling_probe_is_one_rejected_message(relay, marker: bytes) -> None:
    t = await relay.tenant(credits=10)
    raw = await Raw.open(relay.port)
    await raw.auth(t.key)
    await raw.cmd(f"MAIL FROM:<{t.sender}>")
    await raw.cmd("RCPT TO:<a@dest.test>")
    assert (await raw.cmd("DATA")).startswith("354")
    smuggled = (b"MAIL FROM:<" + t.sender.encode() + b">\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\n"
                b"From: " + t.sender.encode() + b"\r\n\r\nsmuggled\r\n")
    raw.writer.write(message(t.sender) + marker + smuggled + b".\r\n")
    reply = await raw.reply()
    assert reply.startswith("550 5.6.11"), reply
    assert (await raw.cmd("NOOP")).startswith("250")  # no smuggled command was answered in between
    raw.close()
    assert relay.peer.messages == []
    assert await relay.balance(t) == 10


async def test_idle_connection_is_closed(db_dsn, store, peer) -> None:
    live = await start_relay(relay_config(db_dsn, peer.url, smtp={"idle_timeout_seconds": 0.5}), store, peer)
    try:
        raw = await Raw.open(live.port)
        await raw.cmd("EHLO client.test")
        assert (await raw.reply(timeout=3)).startswith("421 4.4.2")  # RFC 5321: say so, then close
        assert await raw.closed(timeout=3)
    finally:
        await live.server.stop(grace=1)


async def test_slow_upstream_does_not_trip_the_idle_timer(db_dsn, store, peer) -> None:
    peer.handler.data_delay = 1.5
    cfg = relay_config(db_dsn, peer.url, smtp={"idle_timeout_seconds": 0.5})
    live = await start_relay(cfg, store, peer)
    try:
        t = await live.tenant()
        reply = await send(live.port, t.key, t.sender, ["a@dest.test"], message(t.sender))
        assert reply.code == 250
    finally:
        await live.server.stop(grace=1)


async def test_command_limit_per_connection(db_dsn, store, peer) -> None:
    live = await start_relay(relay_config(db_dsn, peer.url, smtp={"max_commands": 3}), store, peer)
    try:
        raw = await Raw.open(live.port)
        for _ in range(3):
            assert (await raw.cmd("NOOP")).startswith("250")
        assert (await raw.cmd("NOOP")).startswith("421")
        assert await raw.closed()
    finally:
        await live.server.stop(grace=1)


class ExplodingUpstream:
    """An upstream with a bug: the relay must answer 451 without leaking the error."""

    in_use = 0

    async def deliver(self, mail_from, recipients, data, **_):
        raise RuntimeError("secret internal detail")

    async def close(self) -> None:
        return None


async def test_internal_error_is_451_without_internals(relay) -> None:
    t = await relay.tenant(credits=10)
    relay.server.pipeline.upstream = ExplodingUpstream()
    client = await login(relay.port, t.key)
    with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
        await client.sendmail(t.sender, ["a@dest.test"], message(t.sender))
    assert caught.value.code == 451
    assert "secret" not in caught.value.message and "RuntimeError" not in caught.value.message
    # the session is still usable and in a clean state
    assert (await client.noop())[0] == 250
    client.close()
    assert await relay.balance(t) == 10  # refunded at once, not left for the recovery sweep
    [row] = await relay.store.logs()
    assert row["status"] == "failed" and row["credits_refunded"] == 1


async def test_exception_in_the_channel_is_451_not_aiosmtpd_500(relay, monkeypatch) -> None:
    """aiosmtpd's default turns an exception into '500 Error: (Type) text'; ours is a clean 451."""
    t = await relay.tenant(credits=10)

    def broken(address: str, already: int) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(relay.server.pipeline, "check_recipient", broken)
    raw = await Raw.open(relay.port)
    await raw.auth(t.key)
    await raw.cmd(f"MAIL FROM:<{t.sender}>")
    reply = await raw.cmd("RCPT TO:<a@dest.test>")
    assert reply.startswith("451 4.3.0") and "secret" not in reply
    # the transaction was reset, the session goes on
    assert (await raw.cmd(f"MAIL FROM:<{t.sender}>")).startswith("250")
    raw.close()
    assert relay.peer.messages == [] and await relay.balance(t) == 10


async def test_proxy_protocol_client_address_is_used(db_dsn, store, peer) -> None:
    live = await start_relay(relay_config(db_dsn, peer.url, smtp={"proxy_protocol": True}), store, peer)
    try:
        t = await live.tenant()
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 587\r\n")
        raw = Raw(reader, writer)
        assert (await raw.reply()).startswith("220")
        assert (await raw.auth(t.key)).startswith("235")
        await raw.cmd(f"MAIL FROM:<{t.sender}>")
        await raw.cmd("RCPT TO:<a@dest.test>")
        await raw.cmd("DATA")
        assert (await raw.cmd(message(t.sender) + b".\r\n")).startswith("250 OK: ")
        raw.close()
        assert b"([203.0.113.7])" in live.peer.messages[0].data
        # without the header the connection is refused
        raw = await Raw.open(live.port)
        assert await raw.closed()
    finally:
        await live.server.stop(grace=1)
