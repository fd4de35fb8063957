"""DKIM private keys sealed at rest: they open only with the same server secret, domain and selector."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from relay.dkim import keys
from relay.dkim.sign import Algorithm

SECRET = b"s" * 32


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_seal_and_open_round_trip(algorithm: Algorithm) -> None:
    vault = keys.Vault(SECRET)
    new = vault.new(algorithm, "example.com", "relay1")
    opened = vault.open(new.sealed, "example.com", "relay1")
    assert keys.public_value(opened) == new.public
    expected = ed25519.Ed25519PrivateKey if algorithm == "ed25519-sha256" else rsa.RSAPrivateKey
    assert isinstance(opened, expected)
    if isinstance(opened, rsa.RSAPrivateKey):
        assert opened.key_size == 2048 and opened.private_numbers().public_numbers.e == 65537


def test_sealed_key_holds_no_plaintext() -> None:
    vault = keys.Vault(SECRET)
    key = keys.generate("ed25519-sha256")
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    sealed = vault.seal(key, "example.com", "relay1")
    assert raw not in sealed
    assert sealed != vault.seal(key, "example.com", "relay1")  # a fresh nonce each time


@pytest.mark.parametrize(("secret", "domain", "selector"), [
    (b"t" * 32, "example.com", "relay1"),  # the server secret changed
    (SECRET, "example.org", "relay1"),  # the row was copied to another domain
    (SECRET, "example.com", "relay2"),  # or to another selector
])
def test_does_not_open_elsewhere(secret: bytes, domain: str, selector: str) -> None:
    sealed = keys.Vault(SECRET).new("ed25519-sha256", "example.com", "relay1").sealed
    with pytest.raises(keys.SealedKeyError):
        keys.Vault(secret).open(sealed, domain, selector)


def test_altered_or_unknown_blob_does_not_open() -> None:
    vault = keys.Vault(SECRET)
    sealed = bytearray(vault.new("ed25519-sha256", "example.com", "relay1").sealed)
    sealed[-1] ^= 1
    with pytest.raises(keys.SealedKeyError):
        vault.open(bytes(sealed), "example.com", "relay1")
    with pytest.raises(keys.SealedKeyError):
        vault.open(b"\x02" + bytes(sealed[1:]), "example.com", "relay1")
    with pytest.raises(keys.SealedKeyError):
        vault.open(b"\x01short", "example.com", "relay1")
