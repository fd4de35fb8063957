"""What `relay dev` sets on top of the config (only where the user set nothing), and what it prints."""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from pathlib import Path

from relay.channels.base import Endpoint
from relay.config import Config, parse_listen

DEV_SMTP_LISTEN = "127.0.0.1:2525"
DEV_HTTP_LISTEN = "127.0.0.1:8025"
DEV_INBOUND_LISTEN = "127.0.0.1:2526"
DEV_DASHBOARD_LISTEN = "127.0.0.1:8026"
DEV_HOSTNAME = "localhost"
DEV_ACCOUNT = "demo"
DEV_SENDER_DOMAIN = "example.com"
DEV_KEY_NAME = "demo"


def explicit_keys(config_path: str | None, env: Mapping[str, str]) -> set[str]:
    """The 'section.key' names the user set, in the config file or as RELAY_<SECTION>_<KEY>.

    load_config has already read and checked the file, so reading it again cannot fail differently.
    """
    keys: set[str] = set()
    path = config_path or env.get("RELAY_CONFIG")
    if path:
        data = tomllib.loads(Path(path).read_text())
        keys |= {f"{section}.{key}" for section, table in data.items() if isinstance(table, dict)
                 for key in table}
    for var in env:
        if var.startswith("RELAY_"):
            section, _, key = var[len("RELAY_"):].lower().partition("_")
            keys.add(f"{section}.{key}")
    return keys


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dev_config(cfg: Config, data_dir: str | None, explicit: set[str]) -> Config:
    """`relay dev`'s local settings on top of the loaded config.

    Always: the embedded database under the data folder and a Maildir upstream. Where the user set
    nothing: SMTP on 127.0.0.1:2525, HTTP on 127.0.0.1:8025, hostname localhost, and AUTH without TLS
    while the SMTP listener is on loopback. TLS keys are taken as configured.
    """
    folder = Path(data_dir or cfg.server.data_dir).resolve()
    cfg = cfg.replace("server", data_dir=str(folder))
    cfg = cfg.replace("database", url="")
    smtp_listen = cfg.smtp.listen if "smtp.listen" in explicit else DEV_SMTP_LISTEN
    plaintext = (cfg.smtp.allow_plaintext_auth if "smtp.allow_plaintext_auth" in explicit
                 else is_loopback(parse_listen("smtp.listen", smtp_listen)[0]))
    cfg = cfg.replace("smtp", listen=smtp_listen, allow_plaintext_auth=plaintext,
                      hostname=cfg.smtp.hostname if "smtp.hostname" in explicit else DEV_HOSTNAME)
    cfg = cfg.replace("http", listen=cfg.http.listen if "http.listen" in explicit else DEV_HTTP_LISTEN)
    # the app under development is local (unless the user said otherwise, as for inbound below)
    cfg = cfg.replace("webhooks", allow_private_targets=cfg.webhooks.allow_private_targets
                      if "webhooks.allow_private_targets" in explicit else True)
    # the inbound listener, POSTing to apps on this machine: on 2526, or beside a listen address the user
    # chose for SMTP (same host, any free port: two dev instances side by side must not collide)
    inbound_listen = DEV_INBOUND_LISTEN if "smtp.listen" not in explicit else \
        f"{smtp_listen.rpartition(':')[0]}:0"
    cfg = cfg.replace("inbound", listen=cfg.inbound.listen if "inbound.listen" in explicit else inbound_listen,
                      allow_private_targets=cfg.inbound.allow_private_targets
                      if "inbound.allow_private_targets" in explicit else True)
    # the dashboard on 8026 likewise: placed by the user, or none when SMTP was placed elsewhere
    dashboard = (cfg.dashboard.listen if "dashboard.listen" in explicit
                 else "" if "smtp.listen" in explicit else DEV_DASHBOARD_LISTEN)
    cfg = cfg.replace("dashboard", listen=dashboard)
    return cfg.replace("upstream", url=f"maildir:{folder / 'maildir'}")


def _address(endpoint: Endpoint) -> str:
    """host:port, with brackets round an IPv6 host."""
    return f"[{endpoint.host}]:{endpoint.port}" if ":" in endpoint.host else f"{endpoint.host}:{endpoint.port}"


def banner(cfg: Config, listening: list[Endpoint], database: str, account: str, credits: int, key: str,
           login: tuple[str, str] | None = None) -> str:
    """What `relay dev` prints once it listens: where everything is, and how to send a first message
    (login: the dashboard's demo email and password)."""
    smtp = cfg.smtp
    tls = bool(smtp.tls_cert)
    lines = [f"relay dev: data in {cfg.server.data_dir}", f"  postgres {database}"]
    for bound in listening:
        if bound.name == "smtp":
            notes = ["STARTTLS offered" if tls else "no TLS",
                     "AUTH without TLS allowed" if smtp.allow_plaintext_auth else "AUTH only after STARTTLS"]
            lines.append(f"  SMTP     {_address(bound)}  ({'; '.join(notes)})")
        elif bound.name == "smtps":
            lines.append(f"  SMTPS    {_address(bound)}  (implicit TLS)")
        elif bound.name == "http":
            scheme = "https" if cfg.http.tls_cert else "http"
            lines.append(f"  HTTP     {scheme}://{_address(bound)}/v1/send  (Authorization: Bearer <key>)")
        elif bound.name == "inbound":
            lines.append(f"  inbound  {_address(bound)}  (mail for `relay route add` routes, POSTed to your app)")
        elif bound.name == "dashboard" and login is not None:
            scheme = "https" if cfg.dashboard.tls_cert else "http"
            lines.append(f"  dashboard {scheme}://{_address(bound)}/  (log in as {login[0]}, password {login[1]})")
    sender = f"demo@{DEV_SENDER_DOMAIN}"
    lines += [
        f"  upstream {cfg.upstream.url} (every accepted message lands there)",
        f"  account  {account} ({credits} credits), senders @{DEV_SENDER_DOMAIN}",
        f"  key      {key}",
    ]
    shown_key = key if key.startswith("rk_") else "<key>"
    smtp_at = next((b for b in listening if b.name == "smtp"), None)
    http_at = next((b for b in listening if b.name == "http"), None)
    if smtp_at is not None:
        starttls = " --tls" if tls and not smtp.allow_plaintext_auth else ""
        lines.append(f"try:  swaks --server {_address(smtp_at)}{starttls} --auth PLAIN --auth-user demo "
                     f"--auth-password '{shown_key}' --from {sender} --to you@example.net --header 'From: {sender}'")
    if http_at is not None:
        scheme = "https" if cfg.http.tls_cert else "http"
        lines.append(f"  or: curl -s {scheme}://{_address(http_at)}/v1/send -H 'Authorization: Bearer {shown_key}' "
                     f"-H 'Content-Type: application/json' -d '{{\"from\": \"{sender}\", "
                     f"\"to\": \"you@example.net\", \"subject\": \"hi\", \"text\": \"hello\"}}'")
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)
