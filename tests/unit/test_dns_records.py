"""`ct dns records`: the alias domain's records in zone-file syntax, ready to paste."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from worker.domain.dkim import SigningKey
from worker.domain.dns_records import alias_domain_records, zone_lines

RSA = SigningKey("s2026", rsa.generate_private_key(public_exponent=65537, key_size=2048))
ED = SigningKey("s2026e", ed25519.Ed25519PrivateKey.generate())


def _records(rua: str = "mailto:dmarc@example.com") -> dict[tuple[str, str], str]:
    records = alias_domain_records(
        "CT.example.com", dkim_keys=[RSA, ED], mx_host="mx.ct.example.com",
        spf_mechanisms="ip4:203.0.113.7", dmarc_policy="reject", rua=rua,
    )  # fmt: skip
    return {(r.name, r.type): r.value for r in records}


def test_every_record_the_alias_domain_needs() -> None:
    records = _records()
    assert records[("ct.example.com", "MX")] == "10 mx.ct.example.com."
    assert records[("*.ct.example.com", "MX")] == "10 mx.ct.example.com."
    assert records[("ct.example.com", "TXT")] == "v=spf1 ip4:203.0.113.7 -all"
    assert records[("_dmarc.ct.example.com", "TXT")] == (
        "v=DMARC1; p=reject; sp=reject; adkim=r; aspf=r; rua=mailto:dmarc@example.com"
    )
    # The same organisation receives the reports: no authorisation record is needed.
    assert not [name for name, _ in records if "._report._dmarc." in name]


def test_dkim_records_hold_the_public_keys() -> None:
    records = _records()
    der = RSA.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rsa_record = records[("s2026._domainkey.ct.example.com", "TXT")]
    assert rsa_record == f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    raw = ED.key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert records[("s2026e._domainkey.ct.example.com", "TXT")] == (
        f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    )


def test_reports_to_another_organisation_come_with_its_authorisation_record() -> None:
    records = _records("mailto:reports@dmarc-service.example.net")
    assert records[("ct.example.com._report._dmarc.dmarc-service.example.net", "TXT")] == (
        "v=DMARC1"
    )


def test_zone_lines_split_long_txt_values_into_255_octet_strings() -> None:
    text = zone_lines(
        alias_domain_records(
            "ct.example.com", dkim_keys=[RSA], mx_host="mx.ct.example.com",
            spf_mechanisms="mx", dmarc_policy="none", rua="mailto:d@ct.example.com",
        ),
        ttl=300,
    )  # fmt: skip
    dkim_line = next(line for line in text.splitlines() if line.startswith("s2026._domainkey."))
    assert dkim_line.startswith('s2026._domainkey.ct.example.com. 300 IN TXT ( "v=DKIM1; k=rsa;')
    strings = dkim_line.split('"')[1::2]
    assert len(strings) == 2 and all(len(chunk) <= 255 for chunk in strings)
    assert "".join(strings) == RSA.dns_record()
    assert "ct.example.com. 300 IN MX 10 mx.ct.example.com." in text
