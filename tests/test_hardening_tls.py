"""Issue 16: a client's failed TLS is one INFO line with the peer, never an ERROR traceback."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.conftest import eventually, relay_config, start_relay
from tests.smtp_helpers import Raw
from tests.test_smtp_security import ca, certs  # noqa: F401  (fixtures)


def tls_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "relay.tls"]


async def test_client_tls_failures_are_one_info_line(db_dsn, store, peer, certs, caplog) -> None:  # noqa: F811
    caplog.set_level(logging.INFO)
    cfg = relay_config(db_dsn, peer.url, smtp={"tls_cert": certs["cert"], "tls_key": certs["key"],
                                               "implicit_tls_listen": "127.0.0.1:0"},
                       http={"tls_cert": certs["cert"], "tls_key": certs["key"]})
    live = await start_relay(cfg, store, peer)
    try:
        # STARTTLS, then something that is not a TLS hello
        raw = await Raw.open(live.port)
        await raw.cmd("EHLO client.test")
        assert (await raw.cmd("STARTTLS")).startswith("220")
        raw.writer.write(b"this is not TLS\r\n" * 8)
        await raw.writer.drain()
        assert await raw.closed()
        await eventually(lambda: len(tls_lines(caplog)) == 1, what="one line for the failed STARTTLS")
        (line,) = tls_lines(caplog)
        assert line.levelno == logging.INFO and "127.0.0.1" in line.getMessage() and not line.exc_info
        # garbage to the implicit-TLS and HTTPS ports, and a hello cut short
        for port in (live.server.port("smtps"), live.server.port("http")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GARBAGE, NOT TLS\r\n" * 8)
            await writer.drain()
            assert await reader.read() == b""
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            await writer.drain()
            writer.transport.abort()
        # CPython 3.11: a force-closed TLS transport raises this from a loop callback
        asyncio.get_running_loop().call_exception_handler({
            "message": "Exception in callback _SSLProtocolTransport._force_close(ConnectionResetError())",
            "exception": TypeError("SSLProtocol._abort() takes 1 positional argument but 2 were given"),
        })
        await eventually(lambda: len(tls_lines(caplog)) >= 2, what="the 3.11 TypeError as one line")
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], \
            [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        await live.server.stop(grace=1)
