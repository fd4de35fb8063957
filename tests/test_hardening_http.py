"""Issue 16, HTTP side: bearer throttling, slow and greedy clients, early answers, JSON size, NUL,
display-name spoofing (through the relay's own HTTP listener, with httpx or a raw socket)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest

from tests.conftest import LiveRelay, Tenant, assert_untouched, relay_config, running_relay, start_relay
from tests.http_helpers import raw_http as raw_request
from tests.smtp_helpers import Raw, message


def client(live: LiveRelay) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{live.server.port('http')}", timeout=15)


def body(t: Tenant, **fields: object) -> dict[str, object]:
    return {"from": t.sender, "to": "a@dest.test", "subject": "s", "text": "hello", **fields}


async def post(http: httpx.AsyncClient, key: str, doc: object) -> httpx.Response:
    return await http.post("/v1/send", json=doc, headers={"Authorization": f"Bearer {key}"})


async def raw_http(live: LiveRelay) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", live.server.port("http"))


async def test_wrong_bearer_keys_are_delayed_then_refused_with_429(db_dsn, store, peer) -> None:
    async with running_relay(db_dsn, store, peer, smtp={"auth_failures_before_delay": 2,
                                                  "auth_failures_before_refusal": 4}) as live:
        t = await live.tenant()
        wrong = t.key[:-4] + ("aaaa" if not t.key.endswith("aaaa") else "bbbb")
        async with client(live) as http:
            replies = await asyncio.gather(*(post(http, wrong, body(t)) for _ in range(20)))
            statuses = [r.status_code for r in replies]
            assert statuses.count(401) <= 4, statuses
            assert statuses.count(429) >= 16, statuses
            refused = next(r for r in replies if r.status_code == 429)
            assert int(refused.headers["Retry-After"]) > 0
            assert refused.json()["code"] == "RATE_LIMITED"
            # the address is refused, the right key included, until the window moves on
            assert (await post(http, t.key, body(t))).status_code == 429
        await assert_untouched(live, t, 100)


async def test_good_keys_in_parallel_are_not_throttled(relay: LiveRelay) -> None:
    t = await relay.tenant()
    async with client(relay) as http:
        replies = await asyncio.gather(*(post(http, t.key, body(t, to=f"r{i}@dest.test")) for i in range(12)))
    assert [r.status_code for r in replies] == [200] * 12


async def test_display_name_address_is_refused_over_http_and_smtp(relay: LiveRelay) -> None:
    t = await relay.tenant()
    async with client(relay) as http:
        r = await post(http, t.key, body(t, **{"from": f'"ceo@bank.com" <{t.sender}>'}))
    assert r.status_code == 400 and "ceo@bank.com" in r.json()["error"]
    raw = await Raw.open(relay.port)
    await raw.begin_data(t.key, t.sender)
    reply = await raw.cmd(message(t.sender, from_header=f'"ceo@bank.com" <{t.sender}>') + b".\r\n")
    assert reply.startswith("550 5.7.1"), reply
    raw.close()
    await assert_untouched(relay, t, 100)


async def test_display_name_address_allowed_when_authorized_or_switched_on(db_dsn, store, peer) -> None:
    async with running_relay(db_dsn, store, peer, limits={"allow_address_display_names": True}) as live:
        t = await live.tenant()
        async with client(live) as http:
            r = await post(http, t.key, body(t, **{"from": f'"ceo@bank.com" <{t.sender}>'}))
        assert r.status_code == 200
    t2 = await live.tenant(sender="app@example.com")
    live2 = await start_relay(relay_config(db_dsn, peer.url), store, peer)
    try:
        async with client(live2) as http:
            r = await post(http, t2.key, body(t2, **{"from": f'"{t2.sender}" <{t2.sender}>'}))
        assert r.status_code == 200
    finally:
        await live2.server.stop(grace=1)


async def test_nul_in_html_is_refused(relay: LiveRelay) -> None:
    t = await relay.tenant()
    async with client(relay) as http:
        r = await post(http, t.key, body(t, html="<p>a\u0000b</p>"))
    assert r.status_code == 400 and "NUL" in r.json()["error"]
    await assert_untouched(relay, t, 100)


def escaped_json(doc: dict[str, object], field: str, char: str, count: int) -> bytes:
    """doc with doc[field] = char * count, every character written as a \\uXXXX escape (as
    ensure_ascii writes 'é', and as Go's encoder writes '<')."""
    placeholder = "PLACEHOLDER"
    text = json.dumps({**doc, field: placeholder})
    return text.replace(placeholder, f"\\u{ord(char):04x}" * count).encode()


async def test_json_size_is_measured_on_the_decoded_message(db_dsn, store, peer) -> None:
    limit = 1_000_000
    async with running_relay(db_dsn, store, peer, limits={"max_message_bytes": limit}) as live:
        t = await live.tenant()
        headers = {"Authorization": f"Bearer {t.key}", "Content-Type": "application/json"}
        async with client(live) as http:
            # 'é' is 2 bytes of message and 6 of JSON; '<' escaped (Go) is 1 byte and 6
            for char, count in (("é", limit // 2 - 100), ("<", limit - 100)):
                content = escaped_json(body(t), "text", char, count)
                assert len(content) > 2.9 * limit
                r = await http.post("/v1/send", content=content, headers=headers)
                assert r.status_code == 200, r.text[:200]
            assert len(content) > 2 * limit + (1 << 20)  # the '<' one: over the old raw-body limit
            over = escaped_json(body(t), "text", "é", limit // 2 + 1)
            r = await http.post("/v1/send", content=over, headers=headers)
            assert r.status_code == 413
        assert await live.balance(t) == 98 and len(live.peer.messages) == 2
        assert "é" * 100 in live.peer.messages[0].data.decode("utf-8", "replace") or \
            b"=C3=A9" in live.peer.messages[0].data or b"w6nD" in live.peer.messages[0].data


async def test_early_413_reaches_a_client_that_is_still_sending(db_dsn, store, peer) -> None:
    async with running_relay(db_dsn, store, peer, limits={"max_message_bytes": 1000}) as live:
        t = await live.tenant()
        reader, writer = await raw_http(live)
        declared = 50 * 1024 * 1024
        writer.write(f"POST /v1/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t.key}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n".encode())
        with contextlib.suppress(ConnectionError):
            for _ in range(64):  # 4 MiB more, without reading: the answer comes meanwhile
                writer.write(b"x" * 65536)
                await asyncio.wait_for(writer.drain(), 5)
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        writer.close()
        await assert_untouched(live, t, 100)


@pytest.mark.parametrize(("path", "limit"), [
    ("/v1/routes", 16 * 1024), ("/v1/webhooks", 16 * 1024), ("/v1/suppressions", 16 * 1024), ("/v1/domains", 4096),
])
async def test_feature_routes_refuse_a_large_body_before_reading_it(relay: LiveRelay, path: str, limit: int) -> None:
    t = await relay.tenant()
    port = relay.server.port("http")
    head = f"POST {path} HTTP/1.1\nHost: relay.test\nContent-Type: application/json\nAuthorization: Bearer {t.key}\n"
    too_large = {"ok": False, "error": f"Body must be under {limit // 1024}KB", "code": "TOO_LARGE"}
    # a gigabyte declared, a few bytes sent: answered from the header (the body deadline is 120 s)
    status, headers, payload = await raw_request(port, head + "Content-Length: 1000000000\n", b'{"url": ', timeout=5)
    assert (status, headers["connection"], json.loads(payload)) == (413, "close", too_large)
    # no length declared: one chunk over the limit and no end to the body, refused while streaming
    chunk = f"{limit + 1:x}\r\n".encode() + b" " * (limit + 1) + b"\r\n"
    status, headers, payload = await raw_request(port, head + "Transfer-Encoding: chunked\n", chunk, timeout=5)
    assert (status, headers["connection"], json.loads(payload)) == (413, "close", too_large)
    async with client(relay) as http:  # and a whole body one byte over
        r = await http.post(path, content=b" " * (limit + 1), headers={"Authorization": f"Bearer {t.key}"})
    assert (r.status_code, r.json()) == (413, too_large)


async def test_partial_header_is_cut_at_the_header_deadline(db_dsn, store, peer) -> None:
    async with running_relay(db_dsn, store, peer, http={"header_timeout_seconds": 0.5}) as live:
        reader, writer = await raw_http(live)
        writer.write(b"POST /v1/send HTTP/1.1\r\nHost: x\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        writer.close()


async def test_short_body_is_cut_at_the_body_deadline(db_dsn, store, peer) -> None:
    async with running_relay(db_dsn, store, peer, http={"body_timeout_seconds": 0.5}) as live:
        t = await live.tenant()
        reader, writer = await raw_http(live)
        writer.write(f"POST /v1/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t.key}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"from\": ".encode())
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        writer.close()
        await assert_untouched(live, t, 100)


async def test_http_connections_per_address_are_limited(db_dsn, store, peer) -> None:
    async with running_relay(db_dsn, store, peer, http={"max_connections_per_address": 2}) as live:
        held = [await raw_http(live) for _ in range(2)]
        async with client(live) as http:
            # httpx opens a third connection: refused at once
            r = await http.get("/healthz")
            assert r.status_code == 503 and r.json()["code"] == "TOO_MANY_CONNECTIONS"
            for _, writer in held:
                writer.close()

            async def served() -> bool:
                async with httpx.AsyncClient(base_url=str(http.base_url), timeout=5) as fresh:
                    return (await fresh.get("/healthz")).status_code == 200
            from tests.conftest import eventually
            await eventually(served, what="slots freed by closed connections are reused")


async def test_guesses_over_smtp_and_http_share_one_throttle(db_dsn, store, peer) -> None:
    async with running_relay(db_dsn, store, peer, smtp={"auth_failures_before_delay": 10,
                                                  "auth_failures_before_refusal": 4}) as live:
        t = await live.tenant()
        wrong = t.key[:-4] + ("aaaa" if not t.key.endswith("aaaa") else "bbbb")
        for _ in range(2):
            raw = await Raw.open(live.port)
            assert (await raw.auth(wrong)).startswith("535")
            raw.close()
        async with client(live) as http:
            assert [(await post(http, wrong, body(t))).status_code for _ in range(3)] == [401, 401, 429]
        raw = await Raw.open(live.port)
        assert (await raw.auth(t.key)).startswith("421")
        raw.close()
        await assert_untouched(live, t, 100)
