"""Mail domains of the tests' own: SPF, DKIM and DMARC records in the loopback DNS, and a signer.

Each `SenderDomain` authorises one loopback source address in SPF (so a test sender that binds
it passes, and one that binds another address fails), holds a DKIM key pair made here and
published under `<selector>._domainkey.<domain>`, and optionally a DMARC record.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.dns import LoopbackDns

SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"reply-to"]


def _key_pair() -> tuple[bytes, str]:
    # 1024 bits: dkimpy's minimum, and quick to make; the tests check logic, not key strength.
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public).decode("ascii")


@dataclass
class SenderDomain:
    name: str
    # The SMTP client addresses its SPF record authorises; None: no SPF record at all.
    authorised_ip: str | tuple[str, ...] | None = None
    dmarc: str | None = None  # the TXT of _dmarc.<name>, e.g. "v=DMARC1; p=reject"
    selector: str = "s1"
    private_key: bytes = field(init=False, repr=False)
    public_key: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.private_key, self.public_key = _key_pair()

    def publish(self, dns: LoopbackDns, *, dkim_key: bool = True) -> None:
        """Add this domain's records to the zone (the caller applies the zone)."""
        if self.authorised_ip is not None:
            ips = (
                (self.authorised_ip,) if isinstance(self.authorised_ip, str) else self.authorised_ip
            )
            dns.publish_txt(self.name, f"v=spf1 {' '.join(f'ip4:{ip}' for ip in ips)} -all")
        if dkim_key:
            dns.publish_txt(
                f"{self.selector}._domainkey.{self.name}", f"v=DKIM1; k=rsa; p={self.public_key}"
            )
        if self.dmarc is not None:
            dns.publish_txt(f"_dmarc.{self.name}", self.dmarc)

    def sign(self, message: bytes, *, domain: str | None = None) -> bytes:
        """The message with a DKIM-Signature of this domain's key (d= `domain`, default ours)."""
        signature = dkim.sign(
            message,
            self.selector.encode(),
            (domain or self.name).encode(),
            self.private_key,
            include_headers=SIGNED_HEADERS,
        )
        return bytes(signature) + message


def publish_all(dns: LoopbackDns, *domains: SenderDomain) -> None:
    for domain in domains:
        domain.publish(dns)
    dns.apply()
