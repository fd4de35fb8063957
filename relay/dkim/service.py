"""Sending-domain operations shared by the CLI, the API and the periodic re-check: add, rotate, verify, records."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from relay.dkim import dnscheck, keys, records
from relay.dkim.keys import Vault
from relay.dkim.model import DkimKeyInfo, NewKeyRow, SendingDomain
from relay.dkim.sign import Algorithm
from relay.errors import StoreError, UsageError
from relay.store.domains import taken_message

if TYPE_CHECKING:
    from relay.config import Config
    from relay.store.store import Store

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ED25519_SUFFIX = "e"  # an Ed25519 key's selector is the RSA one plus this: one record per selector


@dataclass(frozen=True, slots=True)
class Verification:
    """A domain after a DNS check, with what was found for each selector and for SPF and DMARC."""

    domain: SendingDomain
    findings: tuple[dnscheck.Finding, ...]


def normalize_domain(text: str) -> str:
    """A domain name in lower-case A-labels; UsageError when it cannot be one."""
    name = text.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise UsageError(f"not a domain name: {text!r}") from None
    labels = name.split(".")
    if len(labels) < 2 or len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise UsageError(f"not a domain name: {text!r}")
    return name


def check_selector(text: str) -> str:
    """A selector: one DNS label (letters, digits, hyphens)."""
    selector = text.strip().lower()
    if not _LABEL.match(selector):
        raise UsageError(f"not a DKIM selector (letters, digits and hyphens, up to 63): {text!r}")
    return selector


def default_selector(cfg: Config, now: datetime | None = None) -> str:
    """<selector_prefix><UTC date>, e.g. relay20261130: unique per day, and says when the key was made."""
    return f"{cfg.dkim.selector_prefix}{(now or datetime.now(UTC)):%Y%m%d}"


def _new_keys(vault: Vault, domain: str, selector: str, algorithms: Sequence[Algorithm]) -> list[NewKeyRow]:
    rows = []
    for algorithm in algorithms:
        name = selector + _ED25519_SUFFIX if algorithm == "ed25519-sha256" else selector
        new = vault.new(algorithm, domain, name)
        rows.append(NewKeyRow(name, algorithm, new.sealed, new.public))
    return rows


async def add(store: Store, cfg: Config, key_secret: bytes, account_id: int, domain: str, *,
              selector: str | None = None, ed25519: bool = False, trust: bool = False) -> SendingDomain:
    """A new sending domain with an RSA-2048 key (and an Ed25519 one beside it when asked)."""
    name = normalize_domain(domain)
    chosen = check_selector(selector) if selector else default_selector(cfg)
    algorithms: list[Algorithm] = ["rsa-sha256", "ed25519-sha256"] if ed25519 else ["rsa-sha256"]
    if await store.domain_taken(name):  # before the keys: a taken domain costs no RSA generation
        raise StoreError(taken_message(name))
    # RSA generation takes tens of milliseconds: off the event loop (add_domain still catches a race)
    rows = await asyncio.to_thread(_new_keys, Vault(key_secret), name, chosen, algorithms)
    return await store.add_domain(account_id, name, trust, rows)


async def rotate(store: Store, cfg: Config, key_secret: bytes, domain: SendingDomain, *,
                 selector: str | None = None, now: bool = False) -> SendingDomain:
    """New keys beside the active ones (same algorithms), taking over once verified (or at once)."""
    active = {k.algorithm for k in domain.keys if k.active}
    algorithms: list[Algorithm] = [a for a in ("rsa-sha256", "ed25519-sha256") if a in active] or ["rsa-sha256"]
    chosen = check_selector(selector) if selector else default_selector(cfg)
    taken = {k.selector for k in domain.keys}
    if not selector:
        base, n = chosen, 1
        while chosen in taken or chosen + _ED25519_SUFFIX in taken:
            n += 1
            chosen = f"{base}-{n}"
    rows = await asyncio.to_thread(_new_keys, Vault(key_secret), domain.domain, chosen, algorithms)
    return await store.add_keys(domain.domain, rows, active=now)


def records_for(cfg: Config, domain: SendingDomain) -> list[records.Record]:
    """The records to publish: each selector's key (newest last), SPF, DMARC, the bounce domain's."""
    bounces = getattr(cfg, "bounces", None)  # [bounces] exists once bounce handling is configured
    bounce_domain = str(getattr(bounces, "domain", "") or "")
    inbound_host = str(getattr(getattr(cfg, "inbound", None), "hostname", "") or cfg.smtp.hostname)
    out: list[records.Record] = []
    for index, key in enumerate(domain.keys):
        key_type = keys.key_type(key.algorithm)
        some = records.for_domain(domain.domain, key.selector, key_type, key.public_key,
                                  spf_include=cfg.dkim.spf_include, dmarc_rua=cfg.dkim.dmarc_rua,
                                  bounce_domain=bounce_domain, inbound_host=inbound_host)
        out.extend(some if index == 0 else [r for r in some if r.purpose == "dkim"])
    dkim_first = sorted(out, key=lambda r: r.purpose != "dkim")  # stable: DKIM records, then the rest
    return dkim_first


async def verify(store: Store, cfg: Config, domain: SendingDomain) -> Verification:
    """Look every selector's key up in DNS, and SPF and DMARC; record what was seen."""
    resolver = dnscheck.make_resolver(cfg.dns.nameservers, cfg.dns.timeout_seconds)
    findings: list[dnscheck.Finding] = []
    for key in domain.keys:  # DnsUnavailable (a RelayError) leaves before anything is recorded
        name = records.dkim_name(domain.domain, key.selector)
        found = dnscheck.check_dkim(await dnscheck.txt_values(resolver, name), name,
                                    keys.key_type(key.algorithm), key.public_key)
        findings.append(found)
    spf = dnscheck.check_spf(await dnscheck.txt_values(resolver, domain.domain), domain.domain,
                             cfg.dkim.spf_include)
    dmarc_name = f"_dmarc.{domain.domain}"
    dmarc = dnscheck.check_dmarc(await dnscheck.txt_values(resolver, dmarc_name), dmarc_name)
    for key, finding in zip(domain.keys, findings, strict=True):
        await store.record_check(domain.domain, key.selector, finding.ok, finding.detail)
    return Verification(await store.find_domain(domain.domain), (*findings, spf, dmarc))


async def recheck_pending(store: Store, cfg: Config) -> int:
    """The periodic re-check: verify every domain with a pending key; how many keys turned verified."""
    turned = 0
    for domain in await store.list_domains():
        if all(k.status == "verified" for k in domain.keys):
            continue
        before = {k.selector for k in domain.keys if k.status == "verified"}
        try:
            after = (await verify(store, cfg, domain)).domain
        except dnscheck.DnsUnavailable:
            continue
        turned += len({k.selector for k in after.keys if k.status == "verified"} - before)
    return turned


def key_json(key: DkimKeyInfo) -> dict[str, Any]:
    """A key for --json and the API: public side only."""
    return {"selector": key.selector, "algorithm": key.algorithm, "status": key.status, "active": key.active,
            "publicKey": key.public_key, "verifiedAt": _iso(key.verified_at), "checkedAt": _iso(key.checked_at),
            "checkDetail": key.check_detail, "createdAt": _iso(key.created_at)}


def domain_json(domain: SendingDomain, cfg: Config | None = None) -> dict[str, Any]:
    """A domain for --json and the API; with cfg, the records to publish too."""
    out: dict[str, Any] = {"domain": domain.domain, "accountId": domain.account_id, "status": domain.status,
                           "trusted": domain.trusted, "signing": domain.signing,
                           "createdAt": _iso(domain.created_at), "keys": [key_json(k) for k in domain.keys]}
    if cfg is not None:
        out["records"] = [r.as_json() for r in records_for(cfg, domain)]
    return out


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
