"""Whether a sending domain's records are published: DKIM key equal to ours, SPF and DMARC present.

Resolution goes through dnspython's asyncio resolver, to `[dns] nameservers` when set (each
"address" or "address:port", IPv6 as "[address]:port") and to the system's resolvers otherwise.
A domain is verified when its DKIM record carries our public key; SPF and DMARC are reported
beside it, as advice, because a domain can sign correctly before its operator settles either.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from relay.dkim import records
from relay.errors import RelayError


class DnsUnavailable(RelayError):
    """No answer could be had (timeout, every nameserver failed): try again later."""


@dataclass(frozen=True, slots=True)
class Finding:
    """The check of one record: where it was looked up, whether it is right, and why not."""

    purpose: str  # "dkim", "spf", "dmarc"
    name: str
    ok: bool
    detail: str
    found: tuple[str, ...] = ()  # the TXT values seen there, each with its strings concatenated

    def as_json(self) -> dict[str, object]:
        """The finding for --json and the API."""
        return {"purpose": self.purpose, "name": self.name, "ok": self.ok, "detail": self.detail,
                "found": list(self.found)}


@dataclass(frozen=True, slots=True)
class Report:
    """All findings for a domain; verified means the DKIM record is right."""

    findings: tuple[Finding, ...]

    @property
    def verified(self) -> bool:
        """True when the DKIM key record carries our public key."""
        return any(f.purpose == "dkim" and f.ok for f in self.findings)


def parse_nameserver(text: str) -> dns.nameserver.Do53Nameserver:
    """'192.0.2.1', '192.0.2.1:5353', '2001:db8::1' or '[2001:db8::1]:5353' as a nameserver; ValueError if not."""
    host, port = text.strip(), 53
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif host.count(":") == 1:
        host, _, port_text = host.partition(":")
        port = int(port_text)
    ipaddress.ip_address(host)  # a name here would need a resolver to find the resolver
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in nameserver {text!r}")
    return dns.nameserver.Do53Nameserver(host, port)


def make_resolver(nameservers: Sequence[str] = (), timeout: float = 5.0) -> dns.asyncresolver.Resolver:
    """A resolver asking the given nameservers, or the system's when none are given."""
    resolver = dns.asyncresolver.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameservers = [parse_nameserver(n) for n in nameservers]
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, 2.0)
    return resolver


async def txt_values(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    """The TXT records at name, each with its character-strings concatenated; [] when there are none."""
    try:
        answer = await resolver.resolve(name, dns.rdatatype.TXT, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout) as error:
        raise DnsUnavailable(f"no DNS answer for {name}: {error}") from None
    values = []
    for rdata in answer:
        values.append(b"".join(rdata.strings).decode("utf-8", "replace"))
    return values


def _tags(value: str) -> dict[str, str]:
    """A tag=value; list (DKIM key records, DMARC) as a dict, whitespace removed from values."""
    out: dict[str, str] = {}
    for part in value.split(";"):
        tag, eq, tag_value = part.partition("=")
        if eq:
            out[tag.strip().lower()] = "".join(tag_value.split())
    return out


def check_dkim(found: list[str], name: str, key_type: str, public: str) -> Finding:
    """Is one of the TXT values at name our key (same p=, same k=)?"""
    if not found:
        return Finding("dkim", name, False, "no TXT record", ())
    for value in found:
        tags = _tags(value)
        if tags.get("p") == public and tags.get("k", "rsa") == key_type and tags.get("v", "DKIM1") == "DKIM1":
            return Finding("dkim", name, True, "the published key is ours", tuple(found))
    return Finding("dkim", name, False, "a TXT record is there but its p= is not this selector's key",
                   tuple(found))


def check_spf(found: list[str], name: str, spf_include: str) -> Finding:
    """One v=spf1 record, naming the include when one is configured."""
    policies = [v for v in found if v.lower().split(" ", 1)[0] == "v=spf1"]
    if not policies:
        return Finding("spf", name, False, "no v=spf1 record", tuple(found))
    if len(policies) > 1:
        return Finding("spf", name, False, "more than one v=spf1 record (SPF permerror)", tuple(policies))
    terms = policies[0].lower().split()
    if spf_include and f"include:{spf_include.lower()}" not in terms:
        return Finding("spf", name, False, f"the SPF record does not include:{spf_include}", tuple(policies))
    return Finding("spf", name, True, "present", tuple(policies))


def check_dmarc(found: list[str], name: str) -> Finding:
    """A v=DMARC1 record at _dmarc."""
    policies = [v for v in found if _tags(v).get("v") == "DMARC1"]
    if not policies:
        return Finding("dmarc", name, False, "no v=DMARC1 record", tuple(found))
    return Finding("dmarc", name, True, f"present (p={_tags(policies[0]).get('p', '?')})", tuple(policies))


async def check(resolver: dns.asyncresolver.Resolver, domain: str, selector: str, key_type: str, public: str,
                spf_include: str = "") -> Report:
    """Look up the DKIM, SPF and DMARC records of domain and judge each; DnsUnavailable if DNS does not answer."""
    dkim_name = records.dkim_name(domain, selector)
    dmarc_name = f"_dmarc.{domain}"
    return Report((
        check_dkim(await txt_values(resolver, dkim_name), dkim_name, key_type, public),
        check_spf(await txt_values(resolver, domain), domain, spf_include),
        check_dmarc(await txt_values(resolver, dmarc_name), dmarc_name),
    ))
