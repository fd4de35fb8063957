"""The [dns] and [dkim] config sections (hooked into relay/config.py's Config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """How relay looks records up (`relay domain verify`, the periodic re-check)."""

    nameservers: tuple[str, ...] = ()  # "address" or "address:port"; empty: the system's resolvers
    timeout_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class DkimConfig:
    """Signing and the records printed for a sending domain."""

    spf_include: str = ""  # the upstream's SPF include (e.g. "_spf.smtp.example.net"): printed and checked
    dmarc_rua: str = ""  # an address for DMARC aggregate reports in the suggested record
    selector_prefix: str = "relay"  # new selectors are <prefix><UTC yyyymmdd>
    key_cache_seconds: float = 60.0  # how long the signing keys are reused before a reload
    recheck_hours: float = 24.0  # how often pending selectors are looked up again (0: only by hand)
    thread_from_bytes: int = 0  # messages this big or bigger are signed in the signing threads, smaller inline


def problems(dns: DnsConfig, dkim: DkimConfig) -> list[tuple[str, str]]:
    """(key, what is wrong) for values of the right type but the wrong content."""
    from relay.dkim.dnscheck import parse_nameserver  # dnspython loads only when the config is checked

    found = []
    for entry in dns.nameservers:
        try:
            parse_nameserver(entry)
        except ValueError:
            found.append(("dns.nameservers", f"expected an IP address with an optional :port, got {entry!r}"))
    if dns.timeout_seconds <= 0:
        found.append(("dns.timeout_seconds", "must be greater than 0"))
    if dkim.key_cache_seconds < 0:
        found.append(("dkim.key_cache_seconds", "must be 0 or more"))
    if dkim.thread_from_bytes < 0:
        found.append(("dkim.thread_from_bytes", "must be 0 or more"))
    if dkim.recheck_hours < 0:
        found.append(("dkim.recheck_hours", "must be 0 or more"))
    if not dkim.selector_prefix or not all(c.isalnum() or c == "-" for c in dkim.selector_prefix):
        found.append(("dkim.selector_prefix", "letters, digits and hyphens only"))
    return found
