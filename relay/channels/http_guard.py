"""Connection guard for the HTTP listener: open connections per address, header and body deadlines,
and a lingering close so an early answer (413, 401) reaches a client that is still sending.

uvicorn has no per-address limit and no header deadline (h11 and httptools wait for ever on a
partial request; `timeout_keep_alive` only covers the gap between requests). The guard wraps
uvicorn's own protocol (GuardedProtocol, one per connection) and its ASGI app (GuardMiddleware,
which knows when a request's header is complete and when its response is done), and the two meet
in a ConnectionState keyed by the client's (host, port).
"""

from __future__ import annotations

import asyncio
import json
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.limits import ConnectionLimit

log = logging.getLogger(__name__)

# After the response that ends a connection: keep reading (and dropping) what the client is still
# sending for this long, so the close does not reset the connection before the client has read
# the answer (RFC 9112 9.6; Apache's lingering close).
LINGER_SECONDS = 2.0


def _canned(status: int, phrase: str, error: str, code: str, extra: str = "") -> bytes:
    body = json.dumps({"ok": False, "error": error, "code": code}).encode()
    head = (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n")
    return head.encode() + body


TOO_MANY = _canned(503, "Service Unavailable", "too many connections from your address",
                   "TOO_MANY_CONNECTIONS", "retry-after: 5\r\n")
HEADER_TIMEOUT = _canned(408, "Request Timeout", "the request header did not arrive in time",
                         "REQUEST_TIMEOUT")


@dataclass
class Guard:
    """What every connection of one listener shares."""

    limit: ConnectionLimit
    header_timeout: float
    body_timeout: float
    states: dict[tuple[str, int], ConnectionState] = field(default_factory=dict)
    stopping: bool = False  # the server is shutting down: close at once, no lingering


class ConnectionState:
    """One connection: the header timer runs while a request header is awaited."""

    def __init__(self, guard: Guard, transport: asyncio.Transport) -> None:
        self.guard = guard
        self.transport = transport
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False

    def await_header(self) -> None:
        """A new request may come: its header must be complete within the header deadline."""
        self.cancel()
        if self.guard.header_timeout > 0 and not self.closing:
            self.timer = asyncio.get_running_loop().call_later(self.guard.header_timeout, self._header_late)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _header_late(self) -> None:
        self.timer = None
        if self.closing or self.transport.is_closing():
            return
        peer = self.transport.get_extra_info("peername")
        log.info("HTTP client %s sent no complete request header in %.0f s; closing",
                 peer[0] if isinstance(peer, tuple) else peer, self.guard.header_timeout)
        self.transport.write(HEADER_TIMEOUT)
        self.linger()

    def linger(self) -> None:
        """Close after the answer: send FIN now, keep reading what comes, close after a while."""
        if self.closing:
            return
        self.closing = True
        self.cancel()
        transport = self.transport
        if transport.is_closing():
            return
        if self.guard.stopping:
            transport.close()
            return
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()  # uvicorn may have paused it; what arrives is dropped now
        asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)


class _Transport:
    """The transport uvicorn's protocol sees: its close() becomes a lingering close."""

    def __init__(self, state: ConnectionState) -> None:
        self._state = state
        self._real = state.transport

    def close(self) -> None:
        self._state.linger()

    def is_closing(self) -> bool:
        return self._state.closing or self._real.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class GuardedProtocol(asyncio.Protocol):
    """Wraps one uvicorn protocol instance: the per-address limit, the header timer, the linger."""

    def __init__(self, inner_class: Callable[..., asyncio.Protocol], guard: Guard, **kwargs: Any) -> None:
        self.guard = guard
        self.inner = inner_class(**kwargs)
        self.state: ConnectionState | None = None
        self.ip: str | None = None
        self.key: tuple[str, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, though they are one
        transport = typing.cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        state = ConnectionState(self.guard, transport)
        self.state = state
        if not self.guard.limit.acquire(ip):
            log.info("HTTP connection from %s refused: too many open connections from it", ip)
            transport.write(TOO_MANY)
            state.linger()
            return
        self.ip = ip
        if isinstance(peer, tuple):
            self.key = (str(peer[0]), int(peer[1]))
            self.guard.states[self.key] = state
        state.await_header()
        self.inner.connection_made(_Transport(state))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self.state is not None and self.state.closing:
            return  # lingering: the answer is out, the rest of the request is dropped
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.state is not None and self.state.closing:
            self.state.transport.close()
            return None
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        if self.ip is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.ip is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is not None:
            self.state.cancel()
        if self.key is not None:
            self.guard.states.pop(self.key, None)
        if self.ip is None:
            return  # refused by the limit: uvicorn never saw it
        self.guard.limit.release(self.ip)
        self.ip = None
        self.inner.connection_lost(exc)


class GuardMiddleware:
    """Outermost ASGI layer: stops the header timer when a request arrives, restarts it when its
    response is done, and bounds the time the body may take (408 and close)."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        state = self.guard.states.get((client[0], client[1])) if scope["type"] == "http" and client else None
        if state is None:
            await self.app(scope, receive, send)
            return
        state.cancel()
        deadline = asyncio.get_running_loop().time() + self.guard.body_timeout
        late = False
        replaced = False

        async def timed_receive() -> Message:
            nonlocal late
            try:
                async with asyncio.timeout_at(deadline):
                    return await receive()
            except TimeoutError:
                late = True
                return {"type": "http.disconnect"}

        async def guarded_send(message: Message) -> None:
            nonlocal replaced
            if late:
                # the body did not come in time: whatever the app answers, the client gets a 408
                if message["type"] == "http.response.start" and not replaced:
                    replaced = True
                    body = json.dumps({"ok": False, "error": "the request body did not arrive in time",
                                       "code": "REQUEST_TIMEOUT"}).encode()
                    await send({"type": "http.response.start", "status": 408, "headers": [
                        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")]})
                    await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        finally:
            if late:
                peer = client[0] if client else "?"
                log.info("HTTP client %s did not send its request body in %.0f s; closing",
                         peer, self.guard.body_timeout)
                state.linger()
            else:
                state.await_header()
