"""DKIM keys for the tests, and the independent verifier: Perl's Mail::DKIM over a real DNS server.

`DkimKeys` makes an RSA and an Ed25519 key once per session (key files the workers load through
their settings, as in production); `publish` puts their records, exactly as `ct dns records`
prints them, into the loopback DNS server; `mail_dkim` asks Mail::DKIM what it thinks of a
message, fetching the keys from that server.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dns.resolver

from tests.support.dns import LoopbackDns
from worker.adapters.dkim_keys import generate_key, load_signer, write_key
from worker.core.config import load_settings
from worker.domain.dkim import DkimSigner
from worker.domain.dns_records import alias_domain_records

VERIFIER = Path(__file__).with_name("dkim_verify.pl")
MAIL_DKIM_HINT = "Mail::DKIM not found: `make tools` installs Debian's libmail-dkim-perl"
SELECTOR = "t2026"
ED25519_SELECTOR = "t2026e"


@dataclass(frozen=True)
class DkimKeys:
    rsa_file: Path
    ed25519_file: Path

    @classmethod
    def create(cls, directory: Path) -> DkimKeys:
        directory.mkdir(parents=True, exist_ok=True)
        keys = cls(directory / "dkim-rsa.pem", directory / "dkim-ed25519.pem")
        write_key(generate_key("rsa"), keys.rsa_file, overwrite=True)
        write_key(generate_key("ed25519"), keys.ed25519_file, overwrite=True)
        return keys

    def settings(self) -> dict[str, object]:
        """The CT_DKIM_* settings (as load_settings keyword arguments) that load these keys."""
        return {
            "dkim_selector": SELECTOR,
            "dkim_private_key_file": self.rsa_file,
            "dkim_ed25519_key_file": self.ed25519_file,
            "dkim_ed25519_selector": ED25519_SELECTOR,
        }

    def signer(self, domain: str) -> DkimSigner:
        return load_signer(load_settings(domain=domain, **self.settings()))

    def publish(self, server: LoopbackDns, domain: str) -> None:
        """The DKIM and DMARC records of `ct dns records` served by `server` (restarted when
        they were not there yet, e.g. after another test cleared its zone)."""
        records = alias_domain_records(
            domain,
            dkim_keys=self.signer(domain).keys,
            mx_host=f"mx.{domain}",
            spf_mechanisms="ip4:127.0.0.1",
            dmarc_policy="reject",
            rua=f"mailto:dmarc-reports@{domain}",
        )
        missing = [
            r
            for r in records
            if r.type == "TXT"
            and not r.name.startswith("*")
            and r.value not in server.zone.txt.get(r.name, [])
        ]
        for record in missing:
            server.publish_txt(record.name, record.value)
        if missing:
            server.apply()


def mail_dkim(message: bytes, server: LoopbackDns) -> list[str]:
    """Mail::DKIM's verdict per signature: `pass d=... s=... a=...`, `fail ...`, or `none`."""
    if (
        shutil.which("perl") is None
        or subprocess.run(
            ["perl", "-MMail::DKIM::Verifier", "-e1"], capture_output=True, check=False
        ).returncode
    ):
        raise RuntimeError(MAIL_DKIM_HINT)
    result = subprocess.run(
        ["perl", str(VERIFIER), str(server.port)],
        input=message,
        capture_output=True,
        timeout=60,
        check=True,
    )
    return result.stdout.decode().splitlines()


def dns_txt(server: LoopbackDns) -> Callable[..., bytes | None]:
    """A dkimpy `dnsfunc` that asks the loopback server (over the network, with dnspython)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.port

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(b"".join(rdata.strings) for rdata in answer)

    return lookup
