"""The DNS records the alias domain needs, as zone-file lines ready to paste (`ct dns records`).

- MX for the domain and, by wildcard, for its subdomains (soft aliases live there): the relay.
- SPF for the domain, which every VERP return path (`bounces+...@domain`) is under, so it is
  what receivers check; a wildcard `-all` for the subdomains, which never send in the envelope.
- One DKIM key record per selector.
- DMARC with relaxed alignment, which covers the soft aliases' From domains (subdomains of the
  signing domain), and an aggregate-report address (`rua`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from worker.domain.dkim import SigningKey

TXT_CHUNK: Final = 255  # RFC 1035: one character-string of a TXT record


@dataclass(frozen=True, slots=True)
class DnsRecord:
    name: str  # absolute, without the trailing dot
    type: str
    value: str
    comment: str


def alias_domain_records(
    domain: str,
    *,
    dkim_keys: Sequence[SigningKey],
    mx_host: str,
    spf_mechanisms: str,
    dmarc_policy: str,
    rua: str,
) -> list[DnsRecord]:
    domain = domain.lower().rstrip(".")
    records = [
        DnsRecord(
            domain, "MX", f"10 {mx_host.rstrip('.')}.", "hard aliases and bounces: the relay"
        ),
        DnsRecord(f"*.{domain}", "MX", f"10 {mx_host.rstrip('.')}.", "soft aliases' subdomains"),
        DnsRecord(
            domain,
            "TXT",
            f"v=spf1 {spf_mechanisms} -all".replace("  ", " "),
            "the VERP return paths' domain: name the hosts your mail leaves from",
        ),
        DnsRecord(f"*.{domain}", "TXT", "v=spf1 -all", "subdomains never send in the envelope"),
    ]
    records += [
        DnsRecord(f"{key.selector}._domainkey.{domain}", "TXT", key.dns_record(),
                  f"DKIM {key.algorithm}")
        for key in dkim_keys
    ]  # fmt: skip
    records.append(
        DnsRecord(
            f"_dmarc.{domain}",
            "TXT",
            f"v=DMARC1; p={dmarc_policy}; sp={dmarc_policy}; adkim=r; aspf=r; rua={rua}",
            "relaxed alignment covers the soft aliases' subdomains",
        )
    )
    report_domain = rua.removeprefix("mailto:").rpartition("@")[2].lower().split("!")[0]
    # Reports to another organisation need its consent; one domain above or below the other
    # is the same organisation (short of a public suffix, which no report address is).
    related = _same_or_below(report_domain, domain) or _same_or_below(domain, report_domain)
    if report_domain and not related:
        records.append(
            DnsRecord(
                f"{domain}._report._dmarc.{report_domain}",
                "TXT",
                "v=DMARC1",
                f"in {report_domain}'s zone: lets it receive {domain}'s reports (RFC 7489 7.1)",
            )
        )
    return records


def _same_or_below(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def zone_lines(records: Sequence[DnsRecord], ttl: int) -> str:
    """BIND zone-file syntax; long TXT values split into 255-octet strings."""
    lines = []
    for record in records:
        value = record.value
        if record.type == "TXT":
            chunks = [value[i : i + TXT_CHUNK] for i in range(0, len(value), TXT_CHUNK)]
            value = " ".join(f'"{chunk}"' for chunk in chunks)
            if len(chunks) > 1:
                value = f"( {value} )"
        lines.append(f"; {record.comment}")
        lines.append(f"{record.name}. {ttl} IN {record.type} {value}")
    return "\n".join(lines)
