"""relay.dkim.dnscheck against a real DNS server in the test process, and the records it checks."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from relay.dkim import dnscheck, keys, records
from tests.dns_server import ZoneServer, zone_server

DOMAIN = "example.com"
SELECTOR = "relay1"
INCLUDE = "_spf.upstream.example.net"


@pytest.fixture(scope="module")
def dns() -> Iterator[ZoneServer]:
    with zone_server() as server:
        yield server


@pytest.fixture(scope="module")
def public() -> str:
    return keys.public_value(keys.generate("rsa-sha256"))


def _records(public: str, **extra: str) -> list[records.Record]:
    return records.for_domain(DOMAIN, SELECTOR, "rsa", public, spf_include=INCLUDE, **extra)


async def _check(dns: ZoneServer, public: str, key_type: str = "rsa") -> dnscheck.Report:
    resolver = dnscheck.make_resolver([dns.nameserver], timeout=3)
    return await dnscheck.check(resolver, DOMAIN, SELECTOR, key_type, public, spf_include=INCLUDE)


def _by_purpose(report: dnscheck.Report) -> dict[str, dnscheck.Finding]:
    return {f.purpose: f for f in report.findings}


async def test_records_as_printed_verify(dns: ZoneServer, public: str) -> None:
    dns.publish(records.zone_text(_records(public)))
    report = await _check(dns, public)
    assert report.verified
    assert all(f.ok for f in report.findings), report
    assert _by_purpose(report)["dkim"].found == (records.dkim_value("rsa", public),)


async def test_wrong_key_is_not_verified(dns: ZoneServer, public: str) -> None:
    other = keys.public_value(keys.generate("rsa-sha256"))
    dns.publish(records.zone_text(_records(other)))
    report = await _check(dns, public)
    assert not report.verified
    assert "p=" in _by_purpose(report)["dkim"].detail


async def test_ed25519_key_checked_with_its_key_type(dns: ZoneServer) -> None:
    ed_public = keys.public_value(keys.generate("ed25519-sha256"))
    dns.publish(records.zone_text(records.for_domain(DOMAIN, SELECTOR, "ed25519", ed_public)))
    assert (await _check(dns, ed_public, "ed25519")).verified
    assert not (await _check(dns, ed_public, "rsa")).verified


async def test_nothing_published(dns: ZoneServer, public: str) -> None:
    dns.publish("")
    findings = _by_purpose(await _check(dns, public))
    assert not any(f.ok for f in findings.values())
    assert findings["dkim"].detail == "no TXT record"
    assert findings["spf"].detail == "no v=spf1 record"
    assert findings["dmarc"].detail == "no v=DMARC1 record"


async def test_spf_without_include_and_double_spf(dns: ZoneServer, public: str) -> None:
    dkim_line = records.zone_text(_records(public)[:1])
    dns.publish(dkim_line + f'\n{DOMAIN}. 3600 IN TXT "v=spf1 mx -all"')
    report = await _check(dns, public)
    assert report.verified and not _by_purpose(report)["spf"].ok
    assert INCLUDE in _by_purpose(report)["spf"].detail
    dns.publish(dkim_line + f'\n{DOMAIN}. 3600 IN TXT "v=spf1 mx -all"\n'
                f'{DOMAIN}. 3600 IN TXT "v=spf1 include:{INCLUDE} ~all"')
    assert "more than one" in _by_purpose(await _check(dns, public))["spf"].detail


async def test_key_split_differently_still_matches(dns: ZoneServer, public: str) -> None:
    value = records.dkim_value("rsa", public).replace("; ", ";")
    pieces = " ".join(f'"{value[i:i + 100]}"' for i in range(0, len(value), 100))
    dns.publish(f"{SELECTOR}._domainkey.{DOMAIN}. 300 IN TXT {pieces}")
    assert (await _check(dns, public)).verified


async def test_silent_nameserver_is_unavailable(public: str) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    try:
        resolver = dnscheck.make_resolver([f"127.0.0.1:{silent.getsockname()[1]}"], timeout=0.5)
        with pytest.raises(dnscheck.DnsUnavailable):
            await dnscheck.check(resolver, DOMAIN, SELECTOR, "rsa", public)
    finally:
        silent.close()


@pytest.mark.parametrize(("text", "address", "port"), [
    ("192.0.2.1", "192.0.2.1", 53), ("192.0.2.1:5353", "192.0.2.1", 5353),
    ("2001:db8::1", "2001:db8::1", 53), ("[2001:db8::1]:5353", "2001:db8::1", 5353),
])
def test_parse_nameserver(text: str, address: str, port: int) -> None:
    parsed = dnscheck.parse_nameserver(text)
    assert (parsed.address, parsed.port) == (address, port)


@pytest.mark.parametrize("text", ["ns.example.com", "192.0.2.1:0", "192.0.2.1:x", "[::1]:70000"])
def test_parse_nameserver_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        dnscheck.parse_nameserver(text)


def test_txt_strings_at_most_255_bytes(public: str) -> None:
    dkim = _records(public)[0]
    assert len(dkim.strings()) == 2 and all(len(s.encode()) <= 255 for s in dkim.strings())
    assert "".join(dkim.strings()) == dkim.value
    assert dkim.zone_line().startswith(f'{SELECTOR}._domainkey.{DOMAIN}. 3600 IN TXT "v=DKIM1; k=rsa; p=')


def test_bounce_and_spf_records_only_when_configured(public: str) -> None:
    bare = records.for_domain(DOMAIN, SELECTOR, "rsa", public)
    assert [r.purpose for r in bare] == ["dkim", "dmarc"]
    full = _records(public, bounce_domain="bounces.example.com", inbound_host="mx.relay.example.org")
    assert [r.purpose for r in full] == ["dkim", "spf", "dmarc", "bounce-mx", "bounce-spf"]
    assert full[3].zone_line() == "bounces.example.com. 3600 IN MX 10 mx.relay.example.org."
    assert full[1].value == f"v=spf1 include:{INCLUDE} ~all"
