"""SSRF guard: resolve a target's host once and refuse addresses that are not on the public internet.

A URL is checked by resolving its host and looking at every address it names; the HTTP client then
connects to exactly those addresses (its resolver is `resolve_checked`), so a second DNS answer
(DNS rebinding) can never slip a private address in between the check and the connection.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from relay.errors import RelayError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges Python's ipaddress does not flag in every supported version but that never reach the public
# internet: the shared address space of carrier-grade NAT and the IPv4 benchmark/documentation nets.
_EXTRA_REFUSED_V4 = tuple(ipaddress.IPv4Network(net) for net in (
    "100.64.0.0/10", "198.18.0.0/15", "192.0.0.0/24", "192.0.2.0/24", "198.51.100.0/24",
    "203.0.113.0/24", "240.0.0.0/4", "255.255.255.255/32",
))
_EXTRA_REFUSED_V6 = tuple(ipaddress.IPv6Network(net) for net in (
    "64:ff9b:1::/48", "100::/64", "2001:db8::/32", "fec0::/10",
))


_DNS_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="relay-target-dns")


class TargetRefused(RelayError):
    """A URL that may not be contacted: bad scheme, no host, or an address that is not public."""


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Policy:
    """Which addresses may be contacted: public ones, plus every one (allow_private) or some nets."""

    allow_private: bool = False
    trusted: tuple[IPNetwork, ...] = ()  # private networks allowed all the same (an internal app's)

    def refusal(self, address: IPAddress) -> str | None:
        """Why address may not be contacted under this policy (None when it may)."""
        if self.allow_private:
            return None
        candidates = [address]
        if isinstance(address, ipaddress.IPv6Address) and (embedded := _embedded_v4(address)) is not None:
            candidates.append(embedded)
        if any(a.version == net.version and a in net for a in candidates for net in self.trusted):
            return None
        return refusal_reason(address)


@dataclass(frozen=True, slots=True)
class CheckedAddress:
    """One address of a host, checked (or allowed by configuration), ready to connect to."""

    host: str  # numeric, with %scope for IPv6 link-local
    port: int
    family: int


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo client, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in ipaddress.IPv6Network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why this address is not a public internet address (None when it is one)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_v4(address)
        if embedded is not None:
            reason = refusal_reason(embedded)
            return f"{reason} (embedded in {address})" if reason else None
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    )
    for name, hit in checks:
        if hit:
            return f"{name} address {address}"
    extra = _EXTRA_REFUSED_V4 if isinstance(address, ipaddress.IPv4Address) else _EXTRA_REFUSED_V6
    if any(address in net for net in extra) or not address.is_global:
        return f"reserved address {address}"
    return None


def ip_literal(host: str) -> IPAddress | None:
    """The address when host is an IP literal (brackets and an IPv6 zone allowed), else None."""
    bare = host.strip("[]").partition("%")[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return None


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address of an inet_aton-only IPv4 form ('2130706433', '127.1', '0177.0.0.1'), which some
    HTTP client versions treat as an IP literal and connect to without asking the resolver."""
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def check_address(host: str, policy: Policy) -> None:
    """Refuse an IP literal (in any form the C library reads as one) the policy does not allow; does
    nothing for a host name."""
    address = ip_literal(host) or _legacy_ipv4(host)
    if address is None:
        return
    reason = policy.refusal(address)
    if reason:
        raise TargetRefused(f"{host} is a {reason}, not a public internet address")


async def resolve_checked(host: str, port: int, policy: Policy,
                          family: int = socket.AF_UNSPEC) -> list[CheckedAddress]:
    """Every address of host, each checked; one refused address refuses the host (no partial trust)."""
    literal = ip_literal(host)
    if literal is not None:
        check_address(host, policy)
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        return [CheckedAddress(str(literal), port, family)]
    loop = asyncio.get_running_loop()
    try:
        # in threads of their own: a tenant's slow DNS must not hold the loop's shared pool, which
        # the upstream's own lookups and the send path's thread work use (the caller's deadline
        # bounds the wait; a lookup past it finishes in its thread and is dropped)
        infos = await loop.run_in_executor(_DNS_THREADS, functools.partial(
            socket.getaddrinfo, host, port, family, socket.SOCK_STREAM))
    except (socket.gaierror, UnicodeError) as error:
        raise TargetRefused(f"{host} does not resolve: {error}") from None
    found: list[CheckedAddress] = []
    for info_family, _type, _proto, _name, sockaddr in infos:
        if info_family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text = str(sockaddr[0])
        address = ipaddress.ip_address(text.partition("%")[0])
        reason = policy.refusal(address)
        if reason:
            raise TargetRefused(f"{host} resolves to a {reason}, not a public internet address")
        if info_family == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3] and "%" not in text:
            # a link-local address is only reachable through its interface (allowed targets only)
            text = f"{text}%{sockaddr[3]}"
        candidate = CheckedAddress(text, int(sockaddr[1]), info_family)
        if candidate not in found:
            found.append(candidate)
    if not found:
        raise TargetRefused(f"{host} has no IPv4 or IPv6 address")
    return found


def split_target(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; TargetRefused when it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise TargetRefused(f"not a valid URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetRefused(f"only http and https URLs can be targets, not {url!r}")
    if not parts.hostname:
        raise TargetRefused(f"the URL {url!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("a target URL may not carry a user name or password")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


async def check_url(url: str, policy: Policy) -> None:
    """Refuse a target URL (at creation) that is not http(s) or whose host the policy refuses."""
    _scheme, host, port = split_target(url)
    await resolve_checked(host, port, policy)
