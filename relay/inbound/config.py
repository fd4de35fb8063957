"""The `[inbound]` config section: the MX listener that POSTs mail to the apps' routes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InboundConfig:
    """The inbound listener (off while listen is empty; port 25 in production)."""

    listen: str = ""  # e.g. "0.0.0.0:25"; empty: no inbound listener
    hostname: str = ""  # the name in the greeting and Received: lines; empty: smtp.hostname
    tls_cert: str = ""  # PEM paths; STARTTLS offered when set
    tls_key: str = ""
    max_message_bytes: int = 10 * 1024 * 1024
    max_recipients: int = 100
    post_timeout_seconds: float = 30.0  # all POSTs of one message, redirects included
    allow_private_targets: bool = False  # route URLs on loopback/private/link-local addresses (dev, tests)
    idle_timeout_seconds: float = 300.0
    max_commands: int = 1000  # per connection
    max_connections_per_client: int = 20  # open connections from one client address
    route_cache_seconds: float = 1.0  # how long the routes read from the database are reused
    max_connections_per_app: int = 10  # pooled HTTP connections per app host

    def problem(self) -> str | None:
        """The first value that is of the right type but unusable, as a config error line."""
        positive = {
            "max_message_bytes": self.max_message_bytes, "max_recipients": self.max_recipients,
            "post_timeout_seconds": self.post_timeout_seconds, "idle_timeout_seconds": self.idle_timeout_seconds,
            "max_commands": self.max_commands, "max_connections_per_client": self.max_connections_per_client,
            "max_connections_per_app": self.max_connections_per_app,
        }
        for key, value in positive.items():
            if value <= 0:
                return f"inbound.{key}: must be greater than 0, got {value!r}"
        if self.route_cache_seconds < 0:
            return "inbound.route_cache_seconds: must be 0 or more"
        if bool(self.tls_cert) != bool(self.tls_key):
            return "inbound.tls_cert: tls_cert and tls_key must be set together"
        if self.post_timeout_seconds >= self.idle_timeout_seconds:
            # the idle timer runs on while the app is called: it must outlast the POSTs
            return "inbound.post_timeout_seconds: must be shorter than inbound.idle_timeout_seconds"
        if self.listen:
            host, sep, port = self.listen.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                return f"inbound.listen: expected host:port, got {self.listen!r}"
        return None
