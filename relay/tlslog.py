"""Client TLS failures are the client's business: one INFO line with the peer and the reason.

Without this a client that speaks garbage to a TLS port or after STARTTLS makes the relay log a
full traceback at ERROR (a failed STARTTLS handshake, asyncio's and uvloop's exception handler,
and CPython 3.11's `SSLProtocol._abort()` TypeError when a transport is force-closed), so any
client could fill the log.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

log = logging.getLogger("relay.tls")

# CPython 3.11's _SSLProtocolTransport._force_close(exc) calls SSLProtocol._abort(exc), which
# takes no argument: the TypeError's text names it
_ABORT_BUG = "_abort()"


def is_tls_failure(error: BaseException | None) -> bool:
    """Is this error (or what caused it) a failed or broken client TLS session?"""
    seen = 0
    while error is not None and seen < 5:
        if isinstance(error, (ssl.SSLError, ssl.CertificateError)):
            return True
        if isinstance(error, TypeError) and _ABORT_BUG in str(error):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def reason(error: BaseException) -> str:
    """The innermost readable cause, on one line."""
    inner: BaseException = error
    while inner.__cause__ is not None:
        inner = inner.__cause__
    text = getattr(inner, "reason", None) or str(inner) or type(inner).__name__
    return " ".join(str(text).split())[:200]


def log_failure(peer: object, error: BaseException) -> None:
    """The one line a client TLS failure gets."""
    log.info("TLS with client %s failed: %s", peer, reason(error))


def _peer(context: dict[str, Any]) -> object:
    for key in ("transport", "protocol"):
        holder = context.get(key)
        get = getattr(holder, "get_extra_info", None)
        if get is not None:
            try:
                peer = get("peername")
            except Exception:  # a half-closed transport may not answer
                continue
            if isinstance(peer, tuple):
                return peer[0]
    return "unknown"


def _is_tls_context(context: dict[str, Any]) -> bool:
    if is_tls_failure(context.get("exception")):
        return True
    message = str(context.get("message", ""))
    return "SSL" in message and isinstance(context.get("exception"), (OSError, TypeError))


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Route the loop's client-TLS errors to one INFO line; everything else as before."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _is_tls_context(context):
            log_failure(_peer(context), context.get("exception") or Exception(context.get("message", "")))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler.relay_previous = previous  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


def uninstall(loop: asyncio.AbstractEventLoop) -> None:
    """Put back the handler install() replaced."""
    current = loop.get_exception_handler()
    if current is not None and hasattr(current, "relay_previous"):
        loop.set_exception_handler(current.relay_previous)
