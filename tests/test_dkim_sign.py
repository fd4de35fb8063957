"""DKIM signatures made by relay.dkim.sign, each verified by dkimpy against the test's own key records."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from relay.dkim import keys
from relay.dkim.sign import SigningError, SigningKey, sign, sign_async
from tests.dkim_helpers import key_record, verify_all

DOMAIN = "example.com"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    key = keys.generate("rsa-sha256")
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    key = keys.generate("ed25519-sha256")
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key


@pytest.fixture(scope="module")
def signing(rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey) -> list[SigningKey]:
    return [SigningKey(DOMAIN, "rsa1", rsa_key), SigningKey(DOMAIN, "ed1", ed_key)]


@pytest.fixture(scope="module")
def published(signing: list[SigningKey]) -> dict[bytes, bytes]:
    return dict(key_record(k.domain, k.selector, k.key) for k in signing)


def _base(subject: str = "Hello") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "App <app@example.com>"
    msg["To"] = "user@example.net"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 01 Jan 2024 10:00:00 +0000"
    msg["Message-ID"] = "<abc@example.com>"
    return msg


def plain_text() -> bytes:
    msg = _base()
    msg.set_content("It works.\n")
    return msg.as_bytes(policy=SMTP)


def eight_bit() -> bytes:
    msg = _base("Grüße")
    msg.set_content("Grüße aus Köln, déjà vu, 日本語\n", cte="8bit")
    return msg.as_bytes(policy=SMTP)


def base64_attachment() -> bytes:
    msg = _base()
    msg.set_content("See attached.\n")
    msg.add_attachment(bytes(range(256)) * 300, maintype="application", subtype="octet-stream",
                       filename="blob.bin")
    return msg.as_bytes(policy=SMTP)


def folded_headers() -> bytes:
    to = ",\r\n\t".join(f"Person Number {i} <person{i}@example.net>" for i in range(8))
    return (b"From: App\r\n <app@example.com>\r\n"
            b"To: " + to.encode() + b"\r\n"
            b"Subject: A subject long enough that it is folded\r\n   over two lines\r\n"
            b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <abc@example.com>\r\n"
            b"Reply-To: support@example.com\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain;\r\n charset=utf-8\r\n"
            b"List-Unsubscribe: <mailto:unsub@example.com?subject=unsubscribe>,\r\n <https://example.com/u/1>\r\n"
            b"\r\nBody.\r\n")


def dot_lines() -> bytes:
    msg = _base()
    msg.set_content(".\n..leading dots\n. single\nend\n")
    return msg.as_bytes(policy=SMTP)


def whitespace_and_blank_tail() -> bytes:
    return (b"From: app@example.com\r\nTo:  user@example.net \r\nSubject:\tspaced \t out \r\n\r\n"
            b"trailing   \t\r\n\tlead\r\n  \r\nmid  dle\r\n\r\n \r\n\r\n")


def no_final_crlf() -> bytes:
    return b"From: app@example.com\r\nTo: user@example.net\r\nSubject: x\r\n\r\nlast line, no CRLF"


def empty_body() -> bytes:
    return b"From: app@example.com\r\nTo: user@example.net\r\nSubject: x\r\n\r\n"


MESSAGES: dict[str, Callable[[], bytes]] = {
    "plain": plain_text, "8bit": eight_bit, "base64": base64_attachment, "folded": folded_headers,
    "dots": dot_lines, "whitespace": whitespace_and_blank_tail, "no-final-crlf": no_final_crlf,
    "empty-body": empty_body,
}


@pytest.mark.parametrize("make", MESSAGES.values(), ids=MESSAGES.keys())
def test_dkimpy_verifies_both_signatures(make: Callable[[], bytes], signing: list[SigningKey],
                                         published: dict[bytes, bytes]) -> None:
    data = make()
    # A body without a final CRLF arrives with one: SMTP ends every DATA section so.
    arrived = data if data.endswith(b"\r\n") else data + b"\r\n"
    signed = sign(data, signing) + arrived
    assert verify_all(signed, published) == [True, True]


def test_signature_tags(signing: list[SigningKey]) -> None:
    fields = sign(folded_headers(), signing, now=1_700_000_000)
    rsa_field = fields.split(b"\r\nDKIM-Signature:")[0]
    tags = dict(dkim.util.parse_tag_value(rsa_field.partition(b":")[2]))
    assert tags[b"a"] == b"rsa-sha256" and tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"d"] == b"example.com" and tags[b"s"] == b"rsa1" and tags[b"t"] == b"1700000000"
    assert b"l" not in tags
    names = [name.strip() for name in tags[b"h"].split(b":")]
    assert names == [b"from", b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"mime-version",
                     b"content-type", b"list-unsubscribe"]
    assert all(len(line) <= 78 for line in fields.split(b"\r\n"))


def test_headers_added_after_signing_keep_it_valid(signing: list[SigningKey], published: dict[bytes, bytes]) -> None:
    data = plain_text()
    signed = sign(data, signing) + data
    later = (b"Received: from relay.example.com by mx.example.net; Mon, 01 Jan 2024 10:00:01 +0000\r\n"
             b"Authentication-Results: mx.example.net; none\r\n" + signed)
    head, _, body = later.partition(b"\r\n\r\n")
    later = head + b"\r\nX-Spam-Score: 0\r\n\r\n" + body
    assert verify_all(later, published) == [True, True]


def _tamper_body(data: bytes) -> bytes:
    return data.replace(b"It works.", b"It worked")


def _tamper_subject(data: bytes) -> bytes:
    return data.replace(b"Subject: Hello", b"Subject: Hallo")


def _add_from_on_top(data: bytes) -> bytes:
    return b"From: attacker@example.org\r\n" + data


def _add_blank_line_inside(data: bytes) -> bytes:
    return data.replace(b"It works.", b"It\r\n\r\nworks.")


TAMPERS = {"body": _tamper_body, "subject": _tamper_subject, "second-from": _add_from_on_top,
           "body-lines": _add_blank_line_inside}


@pytest.mark.parametrize("tamper", TAMPERS.values(), ids=TAMPERS.keys())
def test_tampered_message_fails(tamper: Callable[[bytes], bytes], signing: list[SigningKey],
                                published: dict[bytes, bytes]) -> None:
    data = plain_text()
    fields = sign(data, signing)
    assert verify_all(fields + data, published) == [True, True]
    assert verify_all(fields + tamper(data), published) == [False, False]


def test_wrong_published_key_fails(signing: list[SigningKey]) -> None:
    other = key_record(DOMAIN, "rsa1", keys.generate("rsa-sha256"))
    data = plain_text()
    assert verify_all(sign(data, signing[:1]) + data, dict([other])) == [False]


def test_bytearray_is_signed_in_place_and_left_unchanged(signing: list[SigningKey],
                                                         published: dict[bytes, bytes]) -> None:
    data = bytearray(base64_attachment())
    before = bytes(data)
    fields = sign(data, signing, now=1_700_000_000)
    assert data == before
    assert fields == sign(before, signing, now=1_700_000_000)  # RSA PKCS#1 v1.5 and Ed25519 are deterministic
    assert verify_all(fields + before, published) == [True, True]


def test_no_keys_no_fields() -> None:
    assert sign(plain_text(), []) == b""


@pytest.mark.parametrize("data", [b"To: user@example.net\r\n\r\nbody\r\n", b"\r\nbody\r\n"])
def test_message_without_from_is_refused(data: bytes, signing: list[SigningKey]) -> None:
    with pytest.raises(SigningError):
        sign(data, signing)


async def test_sign_async_inline_and_offloaded_agree(signing: list[SigningKey], published: dict[bytes, bytes]) -> None:
    msg = _base()
    msg.set_content("See attached.\n")
    msg.add_attachment(b"\x00\xff" * 400_000, maintype="application", subtype="octet-stream", filename="big.bin")
    data = msg.as_bytes(policy=SMTP)
    inline = await sign_async(data, signing, now=1_700_000_000, offload_bytes=len(data) + 1)
    offloaded = await asyncio.wait_for(sign_async(data, signing, now=1_700_000_000, offload_bytes=1), 30)
    assert inline == offloaded
    assert verify_all(offloaded + data, published) == [True, True]


def test_ed25519_p_value_is_the_raw_key(ed_key: ed25519.Ed25519PrivateKey) -> None:
    assert len(base64.b64decode(keys.public_value(ed_key))) == 32
