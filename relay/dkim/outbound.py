"""DKIM on the way out: an Upstream that signs each message for its From: domain, then hands it on.

Every message leaves through the server's one Upstream, whether the pipeline relays it (SMTP and
HTTP) or the queue worker delivers it later, so wrapping that Upstream signs all three paths in
one place, after the channels added their own headers (Received, Message-ID, Date) and before the
upstream. The key is chosen by the From: domain (or its nearest parent that is a sending domain,
which DMARC's relaxed alignment accepts); the pipeline has already checked that the sending
account is authorized for that From: address.

Keys come from a KeyRing: every usable key, loaded from the store at once and reused for
`[dkim] key_cache_seconds`, so a send costs no database round trip. A stale ring is reloaded in
the background while the old keys keep signing; a failed reload keeps them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from email.utils import getaddresses
from typing import Protocol

from relay.dkim.config import DkimConfig
from relay.dkim.keys import SealedKeyError, Vault
from relay.dkim.model import SealedKey
from relay.dkim.sign import OFFLOAD_BYTES, SigningError, SigningKey, from_header, sign_async
from relay.errors import StoreUnavailable
from relay.upstream.base import Delivery, Upstream

log = logging.getLogger(__name__)


class KeySource(Protocol):
    """Where the ring loads keys from (the Store)."""

    async def signing_keys(self) -> list[SealedKey]: ...


class KeyRing:
    """The usable signing keys by domain, opened once and reloaded every ttl seconds."""

    def __init__(self, source: KeySource, vault: Vault, ttl: float) -> None:
        self.source = source
        self.vault = vault
        self.ttl = ttl
        self._by_domain: dict[str, list[SigningKey]] | None = None
        self._loaded_at = 0.0
        self._opened: dict[tuple[str, str, bytes], SigningKey] = {}
        self._reload: asyncio.Task[None] | None = None
        self._generation = 0  # bumped by invalidate(): a load begun before it is not used

    async def keys_for(self, domain: str) -> list[SigningKey]:
        """The keys for domain or its nearest parent sending domain ([] when none)."""
        by_domain = await self._current()
        labels = domain.lower().rstrip(".").split(".")
        for i in range(len(labels) - 1):
            keys = by_domain.get(".".join(labels[i:]))
            if keys:
                return keys
        return []

    def invalidate(self) -> None:
        """Reload before the next message is signed (after a change made in this process)."""
        self._by_domain = None
        self._reload = None
        self._generation += 1

    async def _current(self) -> dict[str, list[SigningKey]]:
        if self._by_domain is not None and time.monotonic() - self._loaded_at >= self.ttl:
            self._start_load()  # stale: reload beside, sign with what is loaded meanwhile
        while self._by_domain is None:  # the first message (after an invalidate) waits for the keys
            await asyncio.shield(self._start_load())
        return self._by_domain

    def _start_load(self) -> asyncio.Task[None]:
        """The load under way, or a new one: one at a time."""
        if self._reload is None or self._reload.done():
            self._reload = asyncio.create_task(self._load(), name="dkim-key-reload")
        return self._reload

    async def _load(self) -> None:
        generation = self._generation
        try:
            sealed = await self.source.signing_keys()
        except StoreUnavailable:
            log.warning("DKIM keys could not be reloaded; signing with the ones loaded before", exc_info=True)
            self._loaded_at = time.monotonic()  # try again after a ttl, not on every message
            if self._by_domain is None and generation == self._generation:
                self._by_domain = {}  # nothing loaded yet: sign nothing until the next try
            return
        opened: dict[tuple[str, str, bytes], SigningKey] = {}
        by_domain: dict[str, list[SigningKey]] = {}
        for row in sealed:
            cache_key = (row.domain, row.selector, row.sealed)
            key = self._opened.get(cache_key)
            if key is None:
                try:
                    key = SigningKey(row.domain, row.selector, self.vault.open(row.sealed, row.domain, row.selector))
                except SealedKeyError:
                    log.error("DKIM key %s._domainkey.%s does not open; mail from %s goes unsigned",
                              row.selector, row.domain, row.domain, exc_info=True)
                    continue
            opened[cache_key] = key
            by_domain.setdefault(row.domain, []).append(key)
        if generation != self._generation:
            return  # invalidated meanwhile: this view may predate the change; the newer load applies
        self._opened = opened
        self._by_domain = by_domain
        self._loaded_at = time.monotonic()


class SigningUpstream:
    """An Upstream that DKIM-signs what it is given when a key is there for its From: domain."""

    def __init__(self, inner: Upstream, ring: KeyRing, *, thread_from_bytes: int = OFFLOAD_BYTES) -> None:
        self.inner = inner
        self.ring = ring
        self.thread_from_bytes = thread_from_bytes

    async def deliver(self, mail_from: str, recipients: Sequence[str], data: bytes | bytearray, *,
                      crlf_verified: bool = False, dot_free: bool = False, body_8bit: bool | None = None,
                      smtputf8: bool = False) -> Delivery:
        """Sign (a bytearray in place, as the channels prepare it; bytes into a new buffer), then deliver."""
        keys = await self._keys(data)
        if keys:
            try:
                fields = await sign_async(data, keys, offload_bytes=self.thread_from_bytes)
            except SigningError as exc:  # the channels check From:, so this is a message without one
                log.warning("message not DKIM-signed: %s", exc)
            else:
                if isinstance(data, bytearray):
                    data[0:0] = fields  # the fields are CRLF lines without a leading dot: flags hold
                else:
                    data = fields + data
        return await self.inner.deliver(mail_from, recipients, data, crlf_verified=crlf_verified,
                                        dot_free=dot_free, body_8bit=body_8bit, smtputf8=smtputf8)

    async def _keys(self, data: bytes | bytearray) -> list[SigningKey]:
        value = from_header(data)
        if value is None:
            return []
        addresses = [address for _, address in getaddresses([value]) if "@" in address]
        if not addresses:
            return []
        return await self.ring.keys_for(addresses[0].rpartition("@")[2])

    async def close(self) -> None:
        """Close the upstream underneath."""
        await self.inner.close()

    @property
    def in_use(self) -> int:
        """The upstream's busy connections."""
        return self.inner.in_use


def signing(upstream: Upstream, source: KeySource, key_secret: bytes, dkim: DkimConfig) -> SigningUpstream:
    """upstream behind a signer whose keys come from source (the Store), opened with the server secret."""
    return SigningUpstream(upstream, KeyRing(source, Vault(key_secret), dkim.key_cache_seconds),
                           thread_from_bytes=dkim.thread_from_bytes)
