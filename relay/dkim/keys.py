"""DKIM keys: generation, the public p= value, and private keys sealed at rest under the server secret.

A private key is stored as PKCS#8 DER sealed with AES-256-GCM. The AES key is derived with HKDF
from the server's key secret, so a stolen database alone does not give the keys away; the domain
and selector are the associated data, so a sealed key copied onto another domain's row fails to
open instead of signing for it.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from relay.dkim.sign import Algorithm, PrivateKey
from relay.errors import RelayError

RSA_BITS = 2048
_VERSION = b"\x01"  # first byte of a sealed key: the format, so it can change later
_NONCE_BYTES = 12
_HKDF_INFO = b"relay dkim private keys v1"


class SealedKeyError(RelayError):
    """A sealed key cannot be opened: wrong server secret, or the row was altered or moved."""


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key: the algorithm, the private key sealed for storage, and p=."""

    algorithm: Algorithm
    sealed: bytes
    public: str  # the base64 p= value


def generate(algorithm: Algorithm) -> PrivateKey:
    """A new private key: RSA-2048 (e = 65537) or Ed25519."""
    if algorithm == "ed25519-sha256":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def public_value(key: PrivateKey) -> str:
    """The p= value: base64 SubjectPublicKeyInfo for RSA, the raw 32 bytes for Ed25519 (RFC 8463)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(raw).decode("ascii")


def key_type(algorithm: str) -> str:
    """The k= tag of the DNS record for an algorithm."""
    return "ed25519" if algorithm == "ed25519-sha256" else "rsa"


class Vault:
    """Seals and opens private keys under a key derived from the server secret."""

    def __init__(self, server_secret: bytes) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(server_secret)
        self._aead = AESGCM(derived)

    def seal(self, key: PrivateKey, domain: str, selector: str) -> bytes:
        """The private key as PKCS#8 DER, encrypted and bound to domain and selector."""
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, der, _context(domain, selector))

    def open(self, sealed: bytes, domain: str, selector: str) -> PrivateKey:
        """The private key sealed for domain and selector; SealedKeyError if it does not open."""
        if sealed[:1] != _VERSION or len(sealed) < 1 + _NONCE_BYTES + 16:
            raise SealedKeyError(f"sealed key for {selector}._domainkey.{domain} has an unknown format")
        nonce, ciphertext = sealed[1:1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES:]
        try:
            der = self._aead.decrypt(nonce, ciphertext, _context(domain, selector))
        except InvalidTag:
            raise SealedKeyError(f"sealed key for {selector}._domainkey.{domain} does not open with this server secret "
                            "(changed secret, or an altered row)") from None
        # the AES-GCM tag just proved this DER is the one we sealed (from a key we generated), so the
        # RSA consistency check (~40 ms a key, run on the event loop when the key ring loads) proves nothing
        key = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
        if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise SealedKeyError(f"sealed key for {selector}._domainkey.{domain} is not an RSA or Ed25519 key")
        return key

    def new(self, algorithm: Algorithm, domain: str, selector: str) -> NewKey:
        """Generate a key for domain and selector, sealed for storage, with its p= value."""
        key = generate(algorithm)
        return NewKey(algorithm, self.seal(key, domain, selector), public_value(key))


def _context(domain: str, selector: str) -> bytes:
    """The associated data binding a sealed key to its row."""
    return f"{selector}._domainkey.{domain}".lower().encode("ascii")
