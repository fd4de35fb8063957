"""Pure functions: key format and digest, address checks, sender matching, the auth throttle."""

from __future__ import annotations

import pytest

from relay import keys
from relay.addresses import is_valid_address, is_valid_sender_pattern, matching_rule, normalize
from relay.domain import SenderRule
from relay.limits import AuthThrottle


def test_key_round_trip_and_digest() -> None:
    key_id, secret = keys.new_key_id(), keys.new_secret()
    full = keys.format_key(key_id, secret)
    assert full.startswith(f"rk_{key_id}_")
    parsed = keys.parse_key(full)
    assert parsed == keys.ParsedKey(key_id, secret)
    assert len(secret) >= 43  # 256 bits, URL-safe base64
    stored = keys.digest(b"server", secret)
    assert keys.verify(b"server", secret, stored)
    assert not keys.verify(b"other-server", secret, stored)
    assert not keys.verify(b"server", secret + "x", stored)
    assert secret.encode() not in stored


@pytest.mark.parametrize("raw", ["", "rk_", "rk_abc_def", "xx_0123456789ab_secret", "rk_0123456789ab_",
                                 "rk_0123456789AB_secret", "rk_0123456789ab" + "_" + "s" * 200])
def test_malformed_keys_are_rejected(raw: str) -> None:
    assert keys.parse_key(raw) is None


def test_secret_may_contain_underscores() -> None:
    assert keys.parse_key("rk_0123456789ab_a_b_c") == keys.ParsedKey("0123456789ab", "a_b_c")


@pytest.mark.parametrize(("address", "ok"), [
    ("app@example.com", True), ("first.last+tag@sub.example.co.uk", True), ("a@b", False),
    ("no-at-sign", False), ("two@@example.com", False), (".lead@example.com", False),
    ("dots..in@example.com", False), ("a@-bad.com", False), ("a@example.123", False),
    ("x" * 65 + "@example.com", False), ("ünï@example.com", True),  # RFC 6531 (SMTPUTF8)
    ("ünï@bücher.example", True), ("x\u200b@example.com", False), ("ü@-bad.com", False), ("a b@example.com", False),
    ('"quoted"@example.com', False), ("a@[127.0.0.1]", False), ("", False),
])
def test_address_validity(address: str, ok: bool) -> None:
    assert is_valid_address(address) is ok


def test_sender_matching_prefers_exact_address() -> None:
    rules = [SenderRule("example.com", 5), SenderRule("vip@example.com", 50)]
    assert matching_rule("VIP@Example.com", rules) == SenderRule("vip@example.com", 50)
    assert matching_rule("other@example.com", rules) == SenderRule("example.com", 5)
    assert matching_rule("x@sub.example.com", rules) is None
    assert matching_rule("x@example.org", rules) is None
    assert normalize("App@Example.COM") == "App@example.com"


def test_sender_patterns() -> None:
    assert is_valid_sender_pattern("example.com")
    assert is_valid_sender_pattern("app@example.com")
    assert not is_valid_sender_pattern("localhost")
    assert not is_valid_sender_pattern("@example.com")


def test_auth_throttle_delays_then_refuses() -> None:
    throttle = AuthThrottle(delay_after=2, refuse_after=4)
    assert throttle.verdict("1.2.3.4") == 0
    throttle.failed("1.2.3.4")
    throttle.failed("1.2.3.4")
    assert throttle.verdict("1.2.3.4") == 1.0
    throttle.failed("1.2.3.4")
    assert throttle.verdict("1.2.3.4") == 2.0
    throttle.failed("1.2.3.4")
    assert throttle.verdict("1.2.3.4") is None
    assert throttle.verdict("5.6.7.8") == 0  # per address


def test_auth_throttle_forgets_after_the_window() -> None:
    throttle = AuthThrottle(delay_after=1, refuse_after=2, window=0.0)
    throttle.failed("1.2.3.4")
    throttle.failed("1.2.3.4")
    assert throttle.verdict("1.2.3.4") == 0


def test_auth_throttle_memory_is_bounded() -> None:
    throttle = AuthThrottle(delay_after=1, refuse_after=2, max_tracked=10)
    for i in range(100):
        throttle.failed(f"10.0.0.{i}")
    assert len(throttle._attempts) == 10


def test_upstream_dot_stuffing_and_line_ending_check() -> None:
    from relay.upstream.smtp import _dot_stuffed

    clean = b"Subject: x\r\n\r\n.leading dot\r\nplain\r\n"
    assert _dot_stuffed(clean) == b"Subject: x\r\n\r\n..leading dot\r\nplain\r\n"
    assert _dot_stuffed(b".first\r\n") == b"..first\r\n"
    assert _dot_stuffed(b"no final newline") == b"no final newline\r\n"
    plain = b"a\r\nb\r\n"
    assert _dot_stuffed(plain) is plain  # nothing to stuff: not even a copy
    # unverified data with a bare LF or CR takes aiosmtplib's normalizing path instead
    for smuggle in (b"a\n.\nb\r\n", b"a\r.\rb\r\n", b"a\r\n.\nb\r\n"):
        assert _dot_stuffed(smuggle) is None
    # data a channel verified is trusted (the SMTP channel refuses bare CR/LF before this point)
    assert _dot_stuffed(b"a\r\n.b\r\n", verified=True) == b"a\r\n..b\r\n"


def test_dot_free_data_is_sent_as_it_is() -> None:
    from relay.upstream.smtp import _dot_stuffed

    data = bytearray(b"Subject: x\r\n\r\nbody\r\n")
    assert _dot_stuffed(data, verified=True, dot_free=True) is data
    assert _dot_stuffed(b"a\r\n.b\r\n", verified=True, dot_free=False) == b"a\r\n..b\r\n"


def test_systemd_notify_to_a_stale_socket_is_logged_not_raised(tmp_path, monkeypatch, caplog) -> None:
    """A NOTIFY_SOCKET left over from an earlier service must not stop relay serve from starting."""
    import socket

    from relay import systemd

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    path = tmp_path / "notify.sock"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert systemd.notify("READY=1") is False  # nobody there
    assert "could not notify systemd" in caplog.text
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        assert systemd.notify("READY=1") is True
        assert listener.recv(100) == b"READY=1"


def test_send_request_size_and_a_stable_fingerprint() -> None:
    """size counts html + text in UTF-8 bytes; the fingerprint of a request is what it was before
    size became a field, so a key claimed by an earlier version still matches its retry."""
    from relay.compose import Mailbox, SendRequest, fingerprint

    request = SendRequest(Mailbox("app@example.com", "App"), (Mailbox("a@dest.test"),), subject="Hi",
                          text="hello")
    assert fingerprint(request).hex() == "80f5b1dcd800bca564a1afb6c42e8e29b97a993946e4c9e78c6d4d8ae2c250a8"
    assert SendRequest(Mailbox("a@b.test"), (), html="<p>é</p>", text="ü").size == 9 + 2
