"""`relay domain add|list|show|verify|rotate|remove`: sending domains, their DKIM keys and DNS records."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from relay.commands.output import emit
from relay.config import Config
from relay.dkim import records, service
from relay.dkim.dnscheck import Finding
from relay.dkim.model import SendingDomain
from relay.store.store import Store


def register(sub: Any, leaf: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the `domain` command group."""
    # the nested group's parsers are of the same class as "domain"'s own (the CLI's one-line errors)
    group = sub.add_parser("domain", help="manage sending domains (DKIM)").add_subparsers(dest="action", required=True)
    p = leaf(group, "add", cmd_add, "add a sending domain: make its DKIM key, print the records to publish")
    p.add_argument("account")
    p.add_argument("domain")
    p.add_argument("--selector", help="DKIM selector (default: <dkim.selector_prefix><UTC date>)")
    p.add_argument("--ed25519", action="store_true", help="also make an Ed25519 key (RFC 8463), signed beside RSA")
    p.add_argument("--trust", action="store_true",
                   help="sign at once, without the DNS check (tests, operators who know)")
    p = leaf(group, "list", cmd_list, "list sending domains")
    p.add_argument("--account", help="only this account's domains")
    leaf(group, "show", cmd_show, "show a sending domain, its keys and the records to publish").add_argument("domain")
    leaf(group, "verify", cmd_verify, "check the records in DNS; a domain is signed for once verified"
         ).add_argument("domain")
    p = leaf(group, "rotate", cmd_rotate, "new key beside the current one; it takes over once verified")
    p.add_argument("domain")
    p.add_argument("--selector", help="the new selector (default: <dkim.selector_prefix><UTC date>)")
    p.add_argument("--now", action="store_true", help="sign with the new key at once, without the DNS check")
    p = leaf(group, "remove", cmd_remove, "remove a sending domain, or one old selector of it")
    p.add_argument("domain")
    p.add_argument("--selector", help="only this selector (not the active one)")



def _describe(domain: SendingDomain, cfg: Config, *, with_records: bool) -> str:
    """The text form: the domain's state, its keys, and (on add/show/rotate) the records to paste."""
    signing = "signing" if domain.signing else "not signing yet"
    lines = [f"domain {domain.domain} (account {domain.account_id}): {domain.status}"
             f"{', trusted' if domain.trusted else ''}, {signing}"]
    for key in domain.keys:
        state = "active" if key.active else "standby"
        lines.append(f"  selector {key.selector} {key.algorithm} {key.status} {state}"
                     + (f" ({key.check_detail})" if key.check_detail else ""))
    if with_records:
        lines += ["", "Publish these DNS records (zone-file form; a TXT value longer than 255 bytes is split",
                  "into quoted strings, which DNS joins back together):", ""]
        lines.append(records.zone_text(service.records_for(cfg, domain)))
    return "\n".join(lines)


async def cmd_add(store: Store, args: argparse.Namespace) -> None:
    """Add a sending domain with its key(s); print the records to publish."""
    account = await store.find_account(args.account)
    domain = await service.add(store, args.cfg, args.secret_key, account.id, args.domain,
                               selector=args.selector, ed25519=args.ed25519, trust=args.trust)
    text = _describe(domain, args.cfg, with_records=True)
    if not domain.trusted:
        text += f"\n\nThen run: relay domain verify {domain.domain}"
    emit(args, service.domain_json(domain, args.cfg), text)


async def cmd_list(store: Store, args: argparse.Namespace) -> None:
    """List sending domains."""
    account_id = (await store.find_account(args.account)).id if args.account else None
    found = await store.list_domains(account_id)
    emit(args, [service.domain_json(d) for d in found],
          "\n".join(f"{d.domain}\taccount {d.account_id}\t{d.status}\t{'signing' if d.signing else '-'}"
                    for d in found) or "no sending domains")


async def cmd_show(store: Store, args: argparse.Namespace) -> None:
    """One domain with its keys and records."""
    domain = await store.find_domain(service.normalize_domain(args.domain))
    emit(args, service.domain_json(domain, args.cfg), _describe(domain, args.cfg, with_records=True))


def _finding_line(finding: Finding) -> str:
    return f"  {'ok  ' if finding.ok else 'FAIL'} {finding.purpose:5} {finding.name}: {finding.detail}"


async def cmd_verify(store: Store, args: argparse.Namespace) -> None:
    """Check the domain's records in DNS and record the result."""
    domain = await store.find_domain(service.normalize_domain(args.domain))
    checked = await service.verify(store, args.cfg, domain)
    text = "\n".join([_describe(checked.domain, args.cfg, with_records=False), "",
                      *(_finding_line(f) for f in checked.findings)])
    emit(args, service.domain_json(checked.domain) | {"findings": [f.as_json() for f in checked.findings]}, text)


async def cmd_rotate(store: Store, args: argparse.Namespace) -> None:
    """A new selector beside the active one; print its record."""
    domain = await store.find_domain(service.normalize_domain(args.domain))
    rotated = await service.rotate(store, args.cfg, args.secret_key, domain, selector=args.selector, now=args.now)
    text = _describe(rotated, args.cfg, with_records=True)
    if not args.now:
        text += (f"\n\nPublish the new selector's record beside the old one, then run: relay domain verify "
                 f"{rotated.domain}\n(the new key takes over once seen; remove the old selector later)")
    emit(args, service.domain_json(rotated, args.cfg), text)


async def cmd_remove(store: Store, args: argparse.Namespace) -> None:
    """Remove a domain (its mail is no longer signed), or one standby selector."""
    name = service.normalize_domain(args.domain)
    if args.selector:
        await store.remove_key(name, service.check_selector(args.selector))
        emit(args, {"domain": name, "removed": args.selector}, f"domain {name}: selector {args.selector} removed")
        return
    await store.remove_domain(name)
    emit(args, {"domain": name, "removed": True}, f"domain {name} removed; its mail is no longer signed")
