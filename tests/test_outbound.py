"""The outbound HTTP parts against real servers: SSRF checks, Standard Webhooks signing, the pooled client."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import time
from collections.abc import Iterator

import pytest
import standardwebhooks
import trustme

from relay.outbound import signing, ssrf
from relay.outbound.client import ErrorKind, HttpClient
from tests.http_target import closed_port, serve_target

OPEN = ssrf.Policy(allow_private=True)
STRICT = ssrf.Policy()
LOOPBACK_ONLY = ssrf.Policy(trusted=(ipaddress.ip_network("127.0.0.1/32"),))


# --- ssrf -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "reason"), [
    ("8.8.8.8", None),
    ("2001:4860:4860::8888", None),
    ("::ffff:8.8.8.8", None),
    ("127.0.0.1", "loopback"),
    ("127.9.9.9", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("fc00::1", "private"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("100.64.0.1", "reserved"),
    ("240.0.0.1", ""),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
])
def test_refusal_reason(address: str, reason: str | None) -> None:
    found = ssrf.refusal_reason(ipaddress.ip_address(address))
    if reason is None:
        assert found is None
    else:
        assert found is not None and found.startswith(reason), found


async def test_resolve_refuses_a_name_for_loopback_and_allows_it_by_policy() -> None:
    with pytest.raises(ssrf.TargetRefused, match="loopback"):
        await ssrf.resolve_checked("localhost", 80, STRICT)
    found = await ssrf.resolve_checked("localhost", 80, OPEN)
    assert any(a.host in ("127.0.0.1", "::1") for a in found)
    assert all(a.port == 80 for a in found)
    assert await ssrf.resolve_checked("8.8.8.8", 443, STRICT) == [ssrf.CheckedAddress("8.8.8.8", 443, 2)]


async def test_trusted_network_is_allowed_and_nothing_else() -> None:
    ssrf.check_address("127.0.0.1", LOOPBACK_ONLY)
    ssrf.check_address("::ffff:127.0.0.1", LOOPBACK_ONLY)
    with pytest.raises(ssrf.TargetRefused):
        ssrf.check_address("127.0.0.2", LOOPBACK_ONLY)
    with pytest.raises(ssrf.TargetRefused):
        ssrf.check_address("[::1]", LOOPBACK_ONLY)


@pytest.mark.parametrize(("url", "problem"), [
    ("ftp://example.com/x", "only http and https"),
    ("http:///path", "names no host"),
    ("http://user:pw@example.com/", "user name or password"),
    ("http://example.com:99999/", "not a valid URL"),
    ("http://no-such-host.invalid/", "does not resolve"),
    ("http://127.0.0.1:8080/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("http://[::ffff:192.168.0.1]/", "private"),
    ("http://localhost/", "loopback"),
])
async def test_check_url_refuses(url: str, problem: str) -> None:
    with pytest.raises(ssrf.TargetRefused, match=problem):
        await ssrf.check_url(url, STRICT)


async def test_check_url_accepts_public_and_allowed() -> None:
    await ssrf.check_url("https://8.8.8.8/hook", STRICT)
    await ssrf.check_url("http://127.0.0.1:8080/", OPEN)


# --- signing ----------------------------------------------------------------------------------

def test_known_vector() -> None:
    """The example of the Standard Webhooks specification."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    got = signing.signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_generated_secret_signs_what_the_reference_verifier_accepts() -> None:
    secret = signing.generate_secret()
    assert secret.startswith("whsec_") and len(signing.secret_key(secret)) == 32
    assert signing.generate_secret() != secret
    body = b'{"type": "inbound", "plain": "h\\u00e9"}'
    headers = signing.signed_headers([secret], signing.new_message_id(), body)
    assert standardwebhooks.Webhook(secret).verify(body, headers) == {"type": "inbound", "plain": "hé"}


def test_rotation_sends_both_signatures() -> None:
    old, new = signing.generate_secret(), signing.generate_secret()
    body = b"{}"
    headers = signing.signed_headers([new, old], "msg_1", body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    standardwebhooks.Webhook(old).verify(body, headers)
    standardwebhooks.Webhook(new).verify(body, headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(signing.generate_secret()).verify(body, headers)


def test_tampering_is_detected() -> None:
    secret = signing.generate_secret()
    headers = signing.signed_headers([secret], "msg_2", b'{"a": 1}')
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(b'{"a": 2}', headers)
    stale = signing.signed_headers([secret], "msg_2", b'{"a": 1}', timestamp=int(time.time()) - 3600)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError, match="too old"):
        standardwebhooks.Webhook(secret).verify(b'{"a": 1}', stale)


@pytest.mark.parametrize("secret", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_c2hvcnQ="])
def test_bad_secrets(secret: str) -> None:
    with pytest.raises(signing.BadSecret):
        signing.signed_headers([secret], "msg_3", b"")


def test_bad_ids_and_no_secret() -> None:
    with pytest.raises(ValueError, match="webhook-id"):
        signing.signed_headers([signing.generate_secret()], "msg 4", b"")
    with pytest.raises(signing.BadSecret):
        signing.signed_headers([], "msg_4", b"")


# --- client -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def localhost_cert(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    folder = tmp_path_factory.mktemp("cert")
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(certfile)
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(certfile, append=True)
    cert.private_key_pem.write_to_path(keyfile)
    yield str(certfile), str(keyfile)


@pytest.mark.parametrize("code", [200, 201, 202, 204, 400, 404, 410, 422, 429, 500, 502, 503, 418, 299])
async def test_each_status_comes_back(code: int) -> None:
    async with serve_target() as target, HttpClient(OPEN) as client:
        result = await client.post(target.url(f"/status/{code}?text=hello+{code}"), b"payload",
                                   {"Content-Type": "application/json", "X-Test": "1"}, timeout=5)
        assert result.status == code and result.error is None
        assert result.ok is (200 <= code < 300)
        if code != 204:
            assert result.body == f"hello {code}".encode()
            assert result.content_type == "text/plain"
        got = target.received[0]
        assert got.method == "POST" and got.body == b"payload"
        assert got.headers["content-type"] == "application/json" and got.headers["x-test"] == "1"
        assert got.headers["user-agent"] == "relay" and got.headers["accept-encoding"] == "identity"
        assert result.elapsed > 0 and result.url == target.url(f"/status/{code}?text=hello+{code}")


async def test_html_body_keeps_its_type() -> None:
    async with serve_target() as target, HttpClient(OPEN) as client:
        result = await client.post(target.url("/status/404?text=<p>no</p>&type=text/html"), b"", {}, timeout=5)
        assert (result.status, result.content_type, result.body) == (404, "text/html", b"<p>no</p>")


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_three_redirects_are_followed_with_the_same_post(code: int) -> None:
    async with serve_target() as target, HttpClient(OPEN) as client:
        result = await client.post(target.url(f"/redirect/3?code={code}&final=201"), b"the message", {}, timeout=5,
                                   max_redirects=3)
        assert (result.status, result.error, result.redirects) == (201, None, 3)
        assert [r.method for r in target.received] == ["POST"] * 4
        assert all(r.body == b"the message" for r in target.received)
        assert result.url.startswith(target.url("/redirect/0"))


async def test_a_fourth_redirect_is_too_many() -> None:
    async with serve_target() as target, HttpClient(OPEN) as client:
        result = await client.post(target.url("/redirect/4"), b"x", {}, timeout=5, max_redirects=3)
        assert (result.status, result.error) == (0, ErrorKind.TOO_MANY_REDIRECTS)
        assert len(target.received) == 4  # the 4th Location is never requested


async def test_redirects_not_followed_by_default() -> None:
    async with serve_target() as target, HttpClient(OPEN) as client:
        result = await client.post(target.url("/redirect/1?code=308"), b"x", {}, timeout=5)
        assert (result.status, result.error, result.redirects) == (308, None, 0)
        assert result.headers["location"].startswith("/redirect/0")
        assert len(target.received) == 1


async def test_hang_past_the_timeout() -> None:
    async with serve_target() as target, HttpClient(OPEN) as client:
        started = time.monotonic()
        result = await client.post(target.url("/hang"), b"x", {}, timeout=0.5)
        assert (result.status, result.error) == (0, ErrorKind.TIMEOUT)
        assert 0.4 < time.monotonic() - started < 3


async def test_slow_body_past_the_timeout() -> None:
    async with serve_target() as target, HttpClient(OPEN) as client:
        result = await client.post(target.url("/slow-body"), b"x", {}, timeout=1.0)
        assert (result.status, result.error) == (0, ErrorKind.TIMEOUT)


async def test_timeout_covers_all_hops() -> None:
    async with serve_target() as target, HttpClient(OPEN) as client:
        hang = target.url("/hang")
        started = time.monotonic()
        result = await client.post(target.url(f"/goto?location={hang}"), b"x", {}, timeout=0.5, max_redirects=3)
        assert result.error is ErrorKind.TIMEOUT and time.monotonic() - started < 3


async def test_closed_port_is_unreachable() -> None:
    async with HttpClient(OPEN) as client:
        result = await client.post(f"http://127.0.0.1:{closed_port()}/", b"x", {}, timeout=5)
        assert (result.status, result.error) == (0, ErrorKind.UNREACHABLE)
        assert result.detail


async def test_big_body_keeps_1kb_and_the_pool_still_works() -> None:
    async with serve_target() as target, HttpClient(OPEN, limit_per_host=1) as client:
        result = await client.post(target.url("/big?size=200000"), b"x", {}, timeout=5)
        assert result.status == 200 and result.body == b"y" * 1024
        again = await client.post(target.url("/status/200"), b"x", {}, timeout=5)
        assert again.status == 200


async def test_per_host_limit() -> None:
    async with serve_target() as target, HttpClient(OPEN, limit_per_host=2) as client:
        results = await asyncio.gather(*(client.post(target.url("/sleep?s=0.3"), b"x", {}, timeout=10)
                                         for _ in range(6)))
        assert [r.status for r in results] == [200] * 6
        assert target.max_in_flight == 2


async def test_ssrf_refused_before_connecting() -> None:
    async with serve_target() as target, HttpClient(STRICT) as client:
        for url in (target.url("/status/200"), target.url("/status/200", host="localhost"),
                    f"http://[::ffff:127.0.0.1]:{target.port}/status/200",
                    # forms only inet_aton reads (some aiohttp versions connect to them unresolved)
                    *(f"http://{host}:{target.port}/status/200" for host in ("2130706433", "127.1", "0177.0.0.1"))):
            result = await client.post(url, b"x", {}, timeout=5)
            assert (result.status, result.error) == (0, ErrorKind.REFUSED_BY_SSRF), (url, result)
            assert "loopback" in result.detail
        assert target.received == []


def test_every_ipv4_spelling_the_c_library_reads_is_checked() -> None:
    """The guard itself, whatever the HTTP client does with such a host: refused as the address it is."""
    for host in ("2130706433", "127.1", "0177.0.0.1", "0x7f.1"):
        with pytest.raises(ssrf.TargetRefused, match="loopback"):
            ssrf.check_address(host, STRICT)
    ssrf.check_address("example.com", STRICT)  # a name is for the resolver to check


async def test_ssrf_checked_again_on_each_redirect_hop() -> None:
    async with serve_target() as target, HttpClient(LOOPBACK_ONLY) as client:
        elsewhere = f"http://127.0.0.2:{target.port}/status/200"
        result = await client.post(target.url(f"/goto?location={elsewhere}"), b"x", {}, timeout=5, max_redirects=3)
        assert (result.status, result.error) == (0, ErrorKind.REFUSED_BY_SSRF)
        by_name = target.url("/status/200", host="localhost")
        result = await client.post(target.url(f"/goto?location={by_name}"), b"x", {}, timeout=5, max_redirects=3)
        # localhost may also name ::1, which this policy refuses: the whole name is refused
        assert (result.status, result.error) in ((200, None), (0, ErrorKind.REFUSED_BY_SSRF))
    async with serve_target() as target, HttpClient(ssrf.Policy(trusted=(ipaddress.ip_network("127.0.0.0/8"),
                                                                         ipaddress.ip_network("::1/128")))) as client:
        result = await client.post(target.url(f"/goto?location={target.url('/status/200', host='localhost')}"),
                                   b"x", {}, timeout=5, max_redirects=3)
        assert (result.status, result.redirects) == (200, 1)


async def test_https_verified_by_default(localhost_cert: tuple[str, str], ca: trustme.CA) -> None:
    certfile, keyfile = localhost_cert
    async with serve_target(certfile=certfile, keyfile=keyfile) as target:
        async with HttpClient(OPEN) as client:
            result = await client.post(target.url("/status/200", host="localhost"), b"x", {}, timeout=5)
            assert (result.status, result.error) == (0, ErrorKind.TLS)
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        async with HttpClient(OPEN, ssl_context=trusting) as client:
            result = await client.post(target.url("/status/200", host="localhost"), b"x", {}, timeout=5)
            assert (result.status, result.error) == (200, None)
        assert len(target.received) == 1


async def test_a_redirect_from_https_to_http_is_not_followed(localhost_cert: tuple[str, str],
                                                              ca: trustme.CA) -> None:
    certfile, keyfile = localhost_cert
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with serve_target(certfile=certfile, keyfile=keyfile) as secure, serve_target() as plain, \
            HttpClient(OPEN, ssl_context=trusting) as client:
        downgrade = secure.url(f"/goto?location={plain.url('/status/200')}", host="localhost")
        result = await client.post(downgrade, b"secret", {}, timeout=5, max_redirects=3)
        assert (result.status, result.error) == (0, ErrorKind.INSECURE_REDIRECT)
        assert plain.received == [] and len(secure.received) == 1


async def test_https_wrong_host_name(ca: trustme.CA, tmp_path: object) -> None:
    import pathlib
    folder = pathlib.Path(str(tmp_path))
    cert = ca.issue_cert("other.test")
    cert.private_key_and_cert_chain_pem.write_to_path(folder / "both.pem")
    async with serve_target(certfile=str(folder / "both.pem"), keyfile=str(folder / "both.pem")) as target:
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        async with HttpClient(OPEN, ssl_context=trusting) as client:
            result = await client.post(target.url("/status/200", host="localhost"), b"x", {}, timeout=5)
            assert (result.status, result.error) == (0, ErrorKind.TLS)
            assert target.received == []


async def _hang_up_on_second_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers the first request of a connection (keep-alive), then closes on the next one unanswered:
    what an app does when its idle timeout ends just as a pooled connection is reused."""
    served = 0
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            if served:
                return
            served += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        writer.close()


async def test_a_pooled_connection_closed_by_the_app_is_retried_once_on_a_new_one() -> None:
    server = await asyncio.start_server(_hang_up_on_second_request, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with HttpClient(OPEN, limit_per_host=1) as client:
            url = f"http://127.0.0.1:{port}/"
            assert (await client.post(url, b"one", {}, timeout=5)).status == 200
            second = await client.post(url, b"two", {}, timeout=5)  # the pooled connection dies unanswered
            assert (second.status, second.error) == (200, None)
    finally:
        server.close()
        await server.wait_closed()


async def test_an_app_that_always_hangs_up_is_unreachable() -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(rude, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with HttpClient(OPEN) as client:
            result = await client.post(f"http://127.0.0.1:{port}/", b"x", {}, timeout=5)
            assert (result.status, result.error) == (0, ErrorKind.UNREACHABLE)
            assert "without answering" in result.detail
    finally:
        server.close()
        await server.wait_closed()
