"""TLS policy for every listener: one server context builder."""

from __future__ import annotations

import ssl

from relay.errors import ListenError


def make_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context from PEM files (TLS 1.2+)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def listener_context(section: str, cert: str, key: str) -> ssl.SSLContext:
    """A listener's TLS context; a certificate or key that cannot be loaded is a ListenError
    naming the config keys, not the error of whatever happened to run next."""
    try:
        return make_tls_context(cert, key)
    except OSError as exc:  # ssl.SSLError is one too
        raise ListenError(f"{section}.tls_cert/{section}.tls_key: cannot load {cert} and {key}: "
                          f"{exc.strerror or exc}") from None
