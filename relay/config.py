"""Configuration: frozen dataclasses loaded from one TOML file plus RELAY_<SECTION>_<KEY> overrides."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relay.dashboard import settings as dashboard_settings
from relay.dkim import config as dkim_config
from relay.dkim.config import DkimConfig, DnsConfig
from relay.errors import RelayError
from relay.events.config import BouncesConfig, EventsConfig, WebhooksConfig
from relay.inbound.config import InboundConfig


class ConfigError(RelayError):
    """A configuration problem, worded as one line that names the key."""


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """Where the state lives."""

    url: str = ""  # empty: the embedded PostgreSQL under server.data_dir
    pool_size: int = 10


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Process-wide settings."""

    data_dir: str = "relay-data"
    key_secret: str = ""  # empty: generated once into <data_dir>/key_secret
    shutdown_grace_seconds: float = 30.0
    recovery_after_seconds: float = 300.0
    key_cache_seconds: float = 1.0  # how long a key lookup is reused (0: never); disabling still bites at once


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """The SMTP submission listeners."""

    listen: str = "127.0.0.1:587"
    implicit_tls_listen: str = ""
    hostname: str = "relay.example.com"
    tls_cert: str = ""
    tls_key: str = ""
    allow_plaintext_auth: bool = False
    idle_timeout_seconds: float = 300.0
    max_commands: int = 1000
    auth_failures_before_delay: int = 3
    auth_failures_before_refusal: int = 10
    proxy_protocol: bool = False  # expect a PROXY v1/v2 header from a load balancer on every connection
    data_timeout_seconds: float = 600.0  # the whole DATA phase, however the bytes trickle in
    max_connections_per_address: int = 20  # open connections from one client address (0: no limit)


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The HTTPS API listener."""

    listen: str = "127.0.0.1:8080"
    tls_cert: str = ""
    tls_key: str = ""
    header_timeout_seconds: float = 10.0  # a request's header must arrive within this
    body_timeout_seconds: float = 120.0  # and its body within this
    max_connections_per_address: int = 50  # open connections from one client address (0: no limit)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """Where accepted mail goes."""

    url: str = "smtp+starttls://smtp.example.net:587"
    username: str = ""
    password: str = ""
    timeout_seconds: float = 30.0
    pool_size: int = 10
    tls_verify: bool = True
    tls_ca_file: str = ""  # extra CA bundle to trust for the upstream (private smarthosts)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Per-key, per-message and per-sender limits."""

    calls_per_minute: int = 120
    max_recipients: int = 100
    max_message_bytes: int = 10 * 1024 * 1024
    credits_per_recipient: int = 1
    default_daily_cap: int = 1000
    # rate-limit calls an instance takes for a busy key at once, spent in memory within the second
    # they were counted in (relay/rate_lease.py); 1: every call is a round trip to the database
    rate_lease: int = 32
    # a From: display name that is itself an address ("ceo@bank.com" <app@example.com>) is
    # refused unless that address is authorized too; true allows it
    allow_address_display_names: bool = False


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Delivery of messages queued over a sender's daily cap."""

    worker: bool = True  # deliver the queue from this instance (run it on at least one)
    rate_per_second: float = 20.0  # per instance, so a backlog does not burst the upstream
    poll_seconds: float = 30.0
    retry_base_seconds: float = 60.0
    retry_max_seconds: float = 3600.0


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """What is kept, and for how long."""

    keep_bodies_hours: float = 0.0  # bodies of delivered or failed queued messages
    log_days: float = 90.0
    cleanup_interval_seconds: float = 600.0
    batch_size: int = 1000


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    bounces: BouncesConfig = field(default_factory=BouncesConfig)
    inbound: InboundConfig = field(default_factory=InboundConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    dashboard: dashboard_settings.DashboardConfig = field(default_factory=dashboard_settings.DashboardConfig)

    def replace(self, section: str, **values: Any) -> Config:
        """A copy with some keys of one section changed."""
        return dataclasses.replace(
            self, **{section: dataclasses.replace(getattr(self, section), **values)}
        )


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _coerce(key: str, raw: Any, kind: Any, from_env: bool) -> Any:
    """Turn a TOML or environment value into the field's type, or raise ConfigError."""
    if isinstance(kind, types.UnionType):  # pragma: no cover - no optional fields today
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if from_env and isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
            return True
        if from_env and isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{key}: expected true or false, got {raw!r}")
    if kind is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}: expected a whole number, got {raw!r}")
        if isinstance(raw, int):
            return raw
        if from_env and isinstance(raw, str):
            try:
                return int(raw)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a whole number, got {raw!r}")
    if kind is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if from_env and isinstance(raw, str):
            try:
                return float(raw)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {raw!r}")
    if typing.get_origin(kind) is tuple:  # a list of strings; from the environment, comma-separated
        items = [i.strip() for i in raw.split(",") if i.strip()] if from_env and isinstance(raw, str) else raw
        if isinstance(items, list) and all(isinstance(i, str) for i in items):
            return tuple(items)
        raise ConfigError(f"{key}: expected a list of strings, got {raw!r}")
    if isinstance(raw, str):
        return raw
    raise ConfigError(f"{key}: expected a string, got {raw!r}")


def parse_listen(key: str, value: str) -> tuple[str, int]:
    """Split 'host:port' (IPv6 as '[::1]:port') or raise ConfigError naming the key."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{key}: expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


_UPSTREAM_SCHEMES = ("smtp", "smtp+starttls", "smtps", "maildir")


# how long past the upstream's deadline a message may still be 'sending' (finalize retries, a
# busy database) before the recovery sweep may take it for stranded
_RECOVERY_MARGIN = 60.0
# how much longer than a webhook POST's deadline its lease must last: the claim before the POST
# and the record after it (a busy loop, a busy pool) happen under the lease too
_LEASE_MARGIN = 5.0


def _validate(cfg: Config) -> None:
    """Check values whose type is right but whose content is not."""
    parse_listen("smtp.listen", cfg.smtp.listen)
    if cfg.smtp.implicit_tls_listen:
        parse_listen("smtp.implicit_tls_listen", cfg.smtp.implicit_tls_listen)
        if not (cfg.smtp.tls_cert and cfg.smtp.tls_key):
            raise ConfigError("smtp.implicit_tls_listen: needs smtp.tls_cert and smtp.tls_key")
    if bool(cfg.smtp.tls_cert) != bool(cfg.smtp.tls_key):
        raise ConfigError("smtp.tls_cert: tls_cert and tls_key must be set together")
    if bool(cfg.http.tls_cert) != bool(cfg.http.tls_key):
        raise ConfigError("http.tls_cert: tls_cert and tls_key must be set together")
    parse_listen("http.listen", cfg.http.listen)
    if not cfg.smtp.hostname or any(c.isspace() for c in cfg.smtp.hostname):
        raise ConfigError(f"smtp.hostname: expected a host name, got {cfg.smtp.hostname!r}")
    scheme = urlsplit(cfg.upstream.url).scheme
    if scheme not in _UPSTREAM_SCHEMES:
        raise ConfigError(
            f"upstream.url: scheme must be one of {', '.join(_UPSTREAM_SCHEMES)}, "
            f"got {cfg.upstream.url!r}"
        )
    if cfg.database.url and urlsplit(cfg.database.url).scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"database.url: expected a postgresql:// URL, got {cfg.database.url!r}")
    positive = {
        "database.pool_size": cfg.database.pool_size,
        "upstream.pool_size": cfg.upstream.pool_size,
        "upstream.timeout_seconds": cfg.upstream.timeout_seconds,
        "smtp.idle_timeout_seconds": cfg.smtp.idle_timeout_seconds,
        "smtp.max_commands": cfg.smtp.max_commands,
        "smtp.data_timeout_seconds": cfg.smtp.data_timeout_seconds,
        "http.header_timeout_seconds": cfg.http.header_timeout_seconds,
        "http.body_timeout_seconds": cfg.http.body_timeout_seconds,
        "limits.calls_per_minute": cfg.limits.calls_per_minute,
        "limits.rate_lease": cfg.limits.rate_lease,
        "limits.max_recipients": cfg.limits.max_recipients,
        "limits.max_message_bytes": cfg.limits.max_message_bytes,
        "limits.credits_per_recipient": cfg.limits.credits_per_recipient,
        "queue.rate_per_second": cfg.queue.rate_per_second,
        "queue.poll_seconds": cfg.queue.poll_seconds,
        "queue.retry_base_seconds": cfg.queue.retry_base_seconds,
        "queue.retry_max_seconds": cfg.queue.retry_max_seconds,
        "retention.log_days": cfg.retention.log_days,
        "retention.cleanup_interval_seconds": cfg.retention.cleanup_interval_seconds,
        "retention.batch_size": cfg.retention.batch_size,
        "webhooks.timeout_seconds": cfg.webhooks.timeout_seconds,
        "webhooks.concurrency": cfg.webhooks.concurrency,
        "webhooks.lease_seconds": cfg.webhooks.lease_seconds,
        "webhooks.poll_seconds": cfg.webhooks.poll_seconds,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be greater than 0, got {value!r}")
    if cfg.server.recovery_after_seconds < cfg.upstream.timeout_seconds + _RECOVERY_MARGIN:
        raise ConfigError(
            f"server.recovery_after_seconds: must be at least upstream.timeout_seconds + {_RECOVERY_MARGIN:g} "
            f"({cfg.upstream.timeout_seconds + _RECOVERY_MARGIN:g}), got {cfg.server.recovery_after_seconds:g}: "
            "a shorter one would fail and refund messages still being delivered")
    if cfg.webhooks.lease_seconds < cfg.webhooks.timeout_seconds + _LEASE_MARGIN:
        raise ConfigError(
            f"webhooks.lease_seconds: must be at least webhooks.timeout_seconds + {_LEASE_MARGIN:g} "
            f"({cfg.webhooks.timeout_seconds + _LEASE_MARGIN:g}), got {cfg.webhooks.lease_seconds:g}: "
            "a shorter lease runs out while the POST is in flight, and the delivery is POSTed twice")
    if cfg.retention.keep_bodies_hours < 0:
        raise ConfigError("retention.keep_bodies_hours: must be 0 or more")
    if cfg.limits.default_daily_cap < 0:
        raise ConfigError("limits.default_daily_cap: must be 0 or more")
    if problem := cfg.inbound.problem():
        raise ConfigError(problem)
    for key, problem in dkim_config.problems(cfg.dns, cfg.dkim):
        raise ConfigError(f"{key}: {problem}")
    for key, count in (("smtp.max_connections_per_address", cfg.smtp.max_connections_per_address),
                       ("http.max_connections_per_address", cfg.http.max_connections_per_address)):
        if count < 0:
            raise ConfigError(f"{key}: must be 0 (no limit) or more")
    if cfg.dashboard.listen:
        parse_listen("dashboard.listen", cfg.dashboard.listen)
    for key, problem in dashboard_settings.validate(cfg.dashboard):
        raise ConfigError(f"{key}: {problem}")


def load_config(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Load the TOML file (if any), apply RELAY_* overrides, validate; raise ConfigError."""
    env = dict(os.environ if env is None else env)
    path = path or env.get("RELAY_CONFIG") or None
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    sections = _section_types()
    for name in data:
        if name not in sections:
            raise ConfigError(f"unknown config section [{name}]")
    built: dict[str, Any] = {}
    for name, cls in sections.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"[{name}]: expected a table")
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in hints:
                raise ConfigError(f"unknown config key {name}.{key}")
            values[key] = _coerce(f"{name}.{key}", value, hints[key], from_env=False)
        prefix = f"RELAY_{name.upper()}_"
        for var, value in env.items():
            if not var.startswith(prefix):
                continue
            key = var[len(prefix):].lower()
            if key not in hints:
                raise ConfigError(f"unknown config key {name}.{key} (from {var})")
            values[key] = _coerce(f"{name}.{key} (from {var})", value, hints[key], from_env=True)
        built[name] = cls(**values)
    cfg = Config(**built)
    _validate(cfg)
    return cfg
