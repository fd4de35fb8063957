"""Adding, listing, rotating and removing webhook endpoints: one set of rules for the CLI and the API."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from relay.errors import UsageError
from relay.events.config import WebhooksConfig
from relay.events.payload import EVENT_TYPES
from relay.outbound import signing, ssrf
from relay.store.store import Store

MAX_URL = 2000


def event_types(names: Sequence[str] | None) -> list[str] | None:
    """The event types an endpoint takes (None: all), checked against the known ones."""
    if not names:
        return None
    unknown = [n for n in names if n not in EVENT_TYPES]
    if unknown:
        raise UsageError(f"unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}")
    return sorted(set(names), key=EVENT_TYPES.index)


async def check_url(url: str, cfg: WebhooksConfig) -> None:
    """http(s), a host, and (unless webhooks.allow_private_targets) only public addresses."""
    if not url or len(url) > MAX_URL or any(c.isspace() for c in url):
        raise UsageError("the URL must be a single http(s) URL of at most 2000 characters")
    try:
        await ssrf.check_url(url, ssrf.Policy(allow_private=cfg.allow_private_targets))
    except ssrf.TargetRefused as exc:
        raise UsageError(f"webhook URL refused: {exc}") from None


def public(endpoint: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
    """An endpoint as the API and `--json` show it (the secret only when just made)."""
    created = endpoint["created_at"]
    shown = {"id": endpoint["id"], "url": endpoint["url"], "events": endpoint["event_types"],
             "enabled": endpoint["enabled"], "disabledReason": endpoint["disabled_reason"],
             "createdAt": created.isoformat() if isinstance(created, datetime) else created}
    if secret is not None:
        shown["secret"] = secret
    return shown


async def add(store: Store, cfg: WebhooksConfig, account_id: int, url: str,
              events: Sequence[str] | None) -> tuple[dict[str, Any], str]:
    """Register an endpoint; (endpoint, its whsec_ secret, shown once)."""
    types = event_types(events)
    await check_url(url, cfg)
    secret = signing.generate_secret()
    endpoint = await store.create_endpoint(f"we_{secrets.token_hex(8)}", account_id, url, types, secret)
    return endpoint, secret


async def rotate(store: Store, cfg: WebhooksConfig, endpoint_id: str,
                 account_id: int | None = None) -> tuple[dict[str, Any], str]:
    """A new secret for an endpoint (the old one signs beside it for rotation_overlap_hours)."""
    secret = signing.generate_secret()
    endpoint = await store.rotate_endpoint_secret(endpoint_id, secret, cfg.rotation_overlap_hours * 3600, account_id)
    return endpoint, secret
