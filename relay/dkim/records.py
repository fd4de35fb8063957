"""The DNS records a sending domain publishes, in copy-paste (zone file) form and as data."""

from __future__ import annotations

from dataclasses import dataclass

TXT_STRING_BYTES = 255  # one character-string in a TXT record holds at most 255 bytes (RFC 1035)


@dataclass(frozen=True, slots=True)
class Record:
    """One record to publish: what it is for, its owner name, type and value."""

    purpose: str  # "dkim", "spf", "dmarc", "bounce-mx", "bounce-spf"
    name: str  # fully qualified, without the trailing dot
    type: str  # "TXT" or "MX"
    value: str  # the whole value (TXT: the strings concatenated)

    def strings(self) -> list[str]:
        """A TXT value cut into character-strings of at most 255 bytes."""
        data = self.value
        return [data[i:i + TXT_STRING_BYTES] for i in range(0, len(data), TXT_STRING_BYTES)] or [""]

    def zone_line(self) -> str:
        """The record as one zone-file line, ready to paste."""
        rdata = " ".join(f'"{s}"' for s in self.strings()) if self.type == "TXT" else self.value
        return f"{self.name}. 3600 IN {self.type} {rdata}"

    def as_json(self) -> dict[str, object]:
        """The record for --json and the API."""
        out: dict[str, object] = {"purpose": self.purpose, "name": self.name, "type": self.type, "value": self.value}
        if self.type == "TXT":
            out["strings"] = self.strings()
        return out


def dkim_name(domain: str, selector: str) -> str:
    """Where a selector's public key is published."""
    return f"{selector}._domainkey.{domain}"


def dkim_value(key_type: str, public: str) -> str:
    """The DKIM key record value (RFC 6376 section 3.6.1)."""
    return f"v=DKIM1; k={key_type}; p={public}"


def spf_value(spf_include: str) -> str:
    """An SPF policy that authorizes the relay's upstream, soft-failing everyone else."""
    return f"v=spf1 include:{spf_include} ~all"


def dmarc_value(domain: str, rua: str = "") -> str:
    """A cautious first DMARC policy: report only, relaxed alignment."""
    report = f" rua=mailto:{rua};" if rua else ""
    return f"v=DMARC1; p=none;{report} adkim=r; aspf=r"


def for_domain(domain: str, selector: str, key_type: str, public: str, *, spf_include: str = "",
               dmarc_rua: str = "", bounce_domain: str = "", inbound_host: str = "") -> list[Record]:
    """Everything to publish for a sending domain: DKIM, SPF, DMARC, and the bounce domain when set."""
    records = [Record("dkim", dkim_name(domain, selector), "TXT", dkim_value(key_type, public))]
    if spf_include:
        records.append(Record("spf", domain, "TXT", spf_value(spf_include)))
    records.append(Record("dmarc", f"_dmarc.{domain}", "TXT", dmarc_value(domain, dmarc_rua)))
    if bounce_domain:
        if inbound_host:
            records.append(Record("bounce-mx", bounce_domain, "MX", f"10 {inbound_host}."))
        if spf_include:
            records.append(Record("bounce-spf", bounce_domain, "TXT", spf_value(spf_include)))
    return records


def zone_text(records: list[Record]) -> str:
    """All records as zone-file lines, one per line."""
    return "\n".join(record.zone_line() for record in records)
