"""The dashboard as a channel: its own listener ([dashboard] listen), uvicorn on the server's loop.

A listener of its own rather than routes under the API's server: the dashboard is for people and
the API for programs, so they are exposed differently (the API to the internet, the dashboard
often only to an office network or a VPN), carry different credentials (cookies + CSRF versus
bearer keys, which must never meet on one origin) and may have different certificates.
"""

from __future__ import annotations

import logging
import os

from relay.channels.base import Endpoint, ServerContext
from relay.channels.http import HttpServer
from relay.channels.http_guard import Guard
from relay.config import parse_listen
from relay.errors import ListenError
from relay.limits import ConnectionLimit
from relay.tls import listener_context

log = logging.getLogger(__name__)


class DashboardChannel:
    """The web dashboard on dashboard.listen (HTTPS when a certificate is configured)."""

    name = "dashboard"

    def __init__(self, ctx: ServerContext) -> None:
        from relay.dashboard.app import build_app  # the dashboard's imports only when it is on

        self.cfg = ctx.cfg.dashboard
        app = build_app(ctx.store, self.cfg, ctx.key_secret, https=bool(self.cfg.tls_cert), config=ctx.cfg,
                        clock=ctx.clock)
        http = ctx.cfg.http  # the same per-address limit and header/body deadlines as the API's listener
        self.server = HttpServer(app, shutdown_grace=ctx.cfg.server.shutdown_grace_seconds,
                                 guard=Guard(ConnectionLimit(http.max_connections_per_address),
                                             http.header_timeout_seconds, http.body_timeout_seconds))
        self._endpoints: list[Endpoint] = []

    @property
    def listening(self) -> list[Endpoint]:
        """The bound listener."""
        return list(self._endpoints)

    async def start(self) -> None:
        """Bind dashboard.listen and serve."""
        host, port = parse_listen("dashboard.listen", self.cfg.listen)
        if self.cfg.tls_cert:
            listener_context("dashboard", self.cfg.tls_cert, self.cfg.tls_key)
        try:
            await self.server.start(host, port, certfile=self.cfg.tls_cert or None, keyfile=self.cfg.tls_key or None)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ListenError(f"dashboard.listen: cannot listen on {self.cfg.listen}: {reason}") from None
        self._endpoints = [Endpoint("dashboard", host, self.server.port)]
        log.info("dashboard listening on http%s://%s:%s", "s" if self.cfg.tls_cert else "", host, self.server.port)

    async def stop(self, grace: float) -> None:
        """Requests in flight may finish within grace."""
        await self.server.stop(grace)


def channels(ctx: ServerContext) -> list[DashboardChannel]:
    """The registry's factory: on unless dashboard.listen is empty."""
    return [DashboardChannel(ctx)] if ctx.cfg.dashboard.listen else []
