"""Build the configured upstream from upstream.url."""

from __future__ import annotations

from urllib.parse import urlsplit

from relay.config import Config
from relay.upstream.base import Upstream
from relay.upstream.maildir import MaildirUpstream
from relay.upstream.smtp import SmtpUpstream


def make_upstream(cfg: Config) -> Upstream:
    """maildir:/path for development, an SMTP smarthost otherwise."""
    url = cfg.upstream.url
    if urlsplit(url).scheme == "maildir":
        return MaildirUpstream(url.partition(":")[2] or "maildir")
    return SmtpUpstream(
        url, username=cfg.upstream.username, password=cfg.upstream.password,
        timeout=cfg.upstream.timeout_seconds, pool_size=cfg.upstream.pool_size,
        tls_verify=cfg.upstream.tls_verify, tls_ca_file=cfg.upstream.tls_ca_file,
        local_hostname=cfg.smtp.hostname,
    )
